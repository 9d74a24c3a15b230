"""The long schema fuzz: schemathesis against the live OpenAPI document of a real ``charlm-serve``
on 127.0.0.1, every operation, with a valid API key and without one.

The models folder holds a trained tiny LSTM, a bidirectional model and six hostile files (see
``tests/reliability/harness.py``); the checks are schemathesis' own (no 5xx, status codes,
content types, headers and bodies as documented, each SSE event, schema-violating requests
refused) and charlm's (``tests/reliability/schema_hooks.py``: the error shape, 401 exactly where
a key is missing, schema-valid requests served). It prints the cases generated per run and the
failures, and exits 1 if any run failed or fewer than ``--min-cases`` cases ran in total.

    python -m bench.fuzz                      # about 5,000+ cases, several minutes
    python -m bench.fuzz --max-examples 800 --seed 7
    python -m bench.fuzz --smoke              # seconds: a few cases, to check that it runs
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.conftest import API_KEY, SERVER_LIMITS
from tests.reliability.harness import (
    write_bidirectional_model,
    write_good_model,
    write_hostile_models,
)
from tests.reliability.test_fuzz_schema import generated_cases, run_schemathesis
from tests.support import start_server, stop_server


def summary_lines(output: str) -> list[str]:
    keep = re.compile(r"(generated|passed|failure|Failures|❌|Seed:|Tested:|Selected:|ST\d{3})")
    return [line for line in output.splitlines() if keep.search(line)][-20:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-examples", type=int, default=400, help="per operation, with a key (400)"
    )
    parser.add_argument(
        "--max-examples-without-key", type=int, default=40, help="per operation (40)"
    )
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--min-cases", type=int, default=5000, help="fail below this total")
    parser.add_argument("--save-output", type=Path, help="write schemathesis' full output here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: 3 examples an operation, 1 without a key, no coverage phase",
    )
    args = parser.parse_args(argv)
    # the smoke run skips the coverage phase, whose hundreds of boundary cases take the time
    extra = ["--phases", "examples,fuzzing"] if args.smoke else []
    if args.smoke:
        args.max_examples, args.max_examples_without_key, args.min_cases = 3, 1, 1
    with tempfile.TemporaryDirectory(prefix="charlm-fuzz-") as tmp:
        folder = Path(tmp) / "models"
        good = write_good_model(folder)
        write_bidirectional_model(folder)
        marker = Path(tmp) / "unpickled"
        write_hostile_models(folder, good, marker)
        server = start_server(
            folder, Path(tmp) / "server.log", CHARLM_API_KEYS=API_KEY, **SERVER_LIMITS
        )
        print(f"server {server.url} (pid {server.process.pid}); limits {SERVER_LIMITS}")
        results = []
        outputs = []
        try:
            for auth, examples in (
                ("with-key", args.max_examples),
                ("without-key", args.max_examples_without_key),
            ):
                started = time.monotonic()
                done = run_schemathesis(server.url, auth, examples, args.seed, extra)
                output = done.stdout + done.stderr
                outputs.append(f"===== {auth}\n{output}")
                cases = generated_cases(output)
                seconds = time.monotonic() - started
                results.append((auth, examples, cases, done.returncode, seconds))
                print(f"\n== {auth}: --max-examples {examples}: {cases} cases in {seconds:.0f}s")
                print("\n".join(summary_lines(output)), flush=True)
        finally:
            stop_server(server)
        log = server.log()
        key_logged = API_KEY in log
        server_errors = len(re.findall(r"app\.access \[[^\]]*\] \S+ \S+ 5\d\d ", log))
        answered = len(re.findall(r"app\.access \[", log))
        executed = marker.exists()
    if args.save_output is not None:
        args.save_output.write_text("\n".join(outputs), encoding="utf-8")
    total = sum(r[2] for r in results)
    print("\nrun           examples/op   cases   exit   seconds")
    for auth, examples, cases, code, seconds in results:
        print(f"{auth:<14}{examples:>11}{cases:>8}{code:>7}{seconds:>10.0f}")
    checks = [
        (f"every run passed ({[r[3] for r in results]})", all(r[3] == 0 for r in results)),
        (f"{total} cases >= {args.min_cases}", total >= args.min_cases),
        (
            f"no 5xx among the {answered} requests in the server's access log ({server_errors})",
            server_errors == 0 and answered >= total,
        ),
        ("the API key never appears in the server log", not key_logged),
        ("nothing in the hostile files was executed", not executed),
    ]
    for text, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
