"""Kill training with SIGKILL at random points, resume each time, and check that nothing was lost.

One run trains uninterrupted (the reference). Another is killed ``--kills`` times (5), each time
at a random moment after it saved at least once since it was (re)started, and continued with
``--resume``. After every kill the best checkpoint and the resume file must load; at the end the
killed run must hold exactly the reference's final weights (bit for bit), and its metrics must
list every step once. It prints, per kill, the step saved and the step reached (the work redone).

    python -m bench.kill_resume
    python -m bench.kill_resume --kills 5 --steps 2000 --seed 3
    python -m bench.kill_resume --smoke      # seconds: one kill of a short run
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from tests.reliability.test_training_faults import (
    _resume_info,
    environment,
    final_weights,
    run,
    train_args,
    train_steps,
)
from tests.support import REPO
from training.resume import load_resume, resume_path


def saved_step(out: Path) -> int:
    if not resume_path(out).exists():
        return -1
    return int(json.loads(_resume_info(out))["step"])


def reached_step(out: Path) -> int:
    steps = train_steps(out)
    return steps[-1] if steps else 0


def kill_once(args: list[str], out: Path, rng: random.Random, max_wait: float) -> dict[str, int]:
    """(Re)start, wait for a new save and the next training step, SIGKILL a random moment
    later."""
    before = saved_step(out)
    process = subprocess.Popen(
        args, cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while saved_step(out) <= before:
            if process.poll() is not None:
                raise RuntimeError("training finished before it could be killed: use more --steps")
            if time.monotonic() > deadline:
                raise RuntimeError("no save within 300 s")
            time.sleep(0.01)
        # past the evaluation and plot that follow a save: the kill lands among training steps
        while reached_step(out) <= saved_step(out) and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, max_wait))
        process.send_signal(signal.SIGKILL)
    finally:
        code = process.wait(timeout=60)
    if code != -signal.SIGKILL:
        raise RuntimeError(f"training exited with {code} before the kill: use more --steps")
    return {"saved": saved_step(out), "reached": reached_step(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000, help="training steps of each run")
    parser.add_argument("--eval-interval", type=int, default=100, help="steps between saves")
    parser.add_argument("--max-wait", type=float, default=0.8, help="seconds after a save")
    parser.add_argument("--seed", type=int, default=0, help="chooses the kill moments")
    parser.add_argument("--smoke", action="store_true", help="seconds: one kill, 100 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.kills, args.steps, args.eval_interval, args.max_wait = 1, 100, 25, 0.02
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="charlm-kill-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus.txt"
        words = ["alpha", "beta", "gamma", "delta", "epsilon"]
        text_rng = random.Random(0)
        corpus.write_text(
            "\n".join(" ".join(text_rng.choices(words, k=6)) for _ in range(2000)),
            encoding="utf-8",
        )
        reference = tmp / "reference" / "model.safetensors"
        started = time.monotonic()
        done = run(train_args(corpus, reference, tmp / "cache", args.steps, args.eval_interval))
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
        print(f"reference run: {args.steps} steps in {time.monotonic() - started:.0f}s")

        killed = tmp / "killed" / "model.safetensors"
        base = train_args(corpus, killed, tmp / "cache", args.steps, args.eval_interval)
        kills = []
        for k in range(args.kills):
            command = base if k == 0 else [*base, "--resume"]
            result = kill_once(command, killed, rng, args.max_wait)
            load_checkpoint(killed)  # the best checkpoint is whole after the kill
            load_resume(resume_path(killed))  # and so is the resume file
            kills.append(result)
            print(
                f"kill {k + 1}: SIGKILL at step {result['reached']},"
                f" last save at step {result['saved']}"
                f" ({result['reached'] - result['saved']} steps to redo); both files load",
                flush=True,
            )
        finished = run([*base, "--resume"])
        if finished.returncode != 0:
            print(finished.stderr[-3000:])
            return 1
        steps = train_steps(killed)
        expected, got = final_weights(reference), final_weights(killed)
        identical = expected.keys() == got.keys() and all(
            torch.equal(expected[name], got[name]) for name in expected
        )
        best_ref = load_checkpoint(reference).training["step"]
        best_killed = load_checkpoint(killed).training["step"]
    checks = [
        (f"{len(kills)} kills, each left a loadable checkpoint and resume file", True),
        ("--resume completed after the last kill", finished.returncode == 0),
        (
            f"every step logged exactly once (1..{args.steps}: {len(steps)} records)",
            steps == list(range(1, args.steps + 1)),
        ),
        ("final weights identical to the uninterrupted run, bit for bit", identical),
        (
            f"best checkpoint at the same step ({best_killed} vs {best_ref})",
            best_ref == best_killed,
        ),
    ]
    redone = [k["reached"] - k["saved"] for k in kills]
    print(f"steps redone after each kill (lost work, never lost results): {redone}")
    for text, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
