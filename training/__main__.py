"""``python -m training`` and ``torchrun --nproc-per-node N -m training``: charlm-train."""

import logging
import os
import sys

from training.cli import train_main

code = train_main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A process of a torchrun job leaves without the interpreter's shutdown: gloo's worker
    # threads may still be releasing a collective's buffers then, and a thread destroyed during
    # static destruction aborts the process ("terminate called without an active exception"),
    # which torchrun reports as a failed run although every file was written. Everything the
    # run owns is closed by now; flush what is buffered and end here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
raise SystemExit(code)
