"""``python -m training`` and ``torchrun --nproc-per-node N -m training``: charlm-train."""

from training.cli import train_main

raise SystemExit(train_main())
