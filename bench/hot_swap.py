"""A checkpoint replaced in the models folder while clients score and generate against it.

Starts a ``charlm-serve`` over a folder holding one model (a random-weight LSTM, ``--hidden-size``
x ``--num-layers``), or uses a running server or stack (``--url`` with the folder it serves,
``--checkpoints``, and ``--model``). ``--clients`` closed-loop clients (``bench.scale_load``: half
scoring, a quarter whole generations, a quarter streams) run throughout; after ``--before``
seconds a new version of the model (the same architecture, new weights, one more character in
its vocabulary) is written beside the file and renamed over it (``os.replace``, atomic), and the
server notices by itself (``CHARLM_RELOAD_INTERVAL_S``). Printed:

- the requests by kind and result: target 0 failed (a stream cut or aborted counts apart);
- the time from the rename until the new version answers: a probe scores a text holding the new
  character every 0.1 s and sees it known (``num_unknown`` 0) instead of unknown; with several
  replicas, until every one does. Target: within 10 s;
- with its own server, its resident memory (RSS): the median of the last seconds before the
  rename, the peak (both versions loaded), and the median over ``--after`` seconds once the old
  version has been dropped (``draining`` 0 in ``/v1/models``). Target: back within half the
  model's size of where it was.

    python -m bench.hot_swap                       # own server, 32 clients, a 2x1024 LSTM
    python -m bench.hot_swap --url http://127.0.0.1:8000 --checkpoints ./checkpoints --model tiny
    python -m bench.hot_swap --smoke               # seconds, a tiny model (memory not judged)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.scale import print_table
from bench.scale_load import LoadResult, Outcome, run_load
from bench.scale_stack import WORDS
from bench.server import Server
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab

MARKER = "Q"  # in the new version's vocabulary only
PROBE = f"the cat sat on {MARKER} mat"
TARGET_S = 10.0
WAIT_S = 120.0  # for the swap to show, before the run gives up


def write_first_version(path: Path, hidden_size: int, num_layers: int) -> int:
    """A random-weight LSTM over the load's alphabet; returns its weights' size in bytes."""
    torch.manual_seed(0)
    vocab = CharVocab.from_text(" ".join(WORDS) + " .\n")
    config = ModelConfig(
        arch="lstm",
        vocab_size=len(vocab),
        embed_size=64,
        hidden_size=hidden_size,
        num_layers=num_layers,
    )
    model = build_model(config)
    save_checkpoint(path, model, vocab)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def replace_with_new_version(path: Path) -> tuple[float, str]:
    """Write a new version of ``path``'s model beside it and rename it over it; returns the
    rename's time (``time.monotonic``) and the new file's SHA-256.

    The new version has the same architecture, new weights, and ``MARKER`` in its vocabulary.
    """
    old = load_checkpoint(path)
    if MARKER in old.vocab:
        raise SystemExit(f"{path.name}'s vocabulary already holds {MARKER!r}: choose another model")
    vocab = CharVocab([*old.vocab.chars, MARKER])
    torch.manual_seed(1)
    model = build_model(old.config.replace(vocab_size=len(vocab)))
    staged = path.with_name(f".{path.name}.new")  # not *.safetensors: the server skips it
    save_checkpoint(staged, model, vocab)
    staged.chmod(0o644)
    sha256 = hashlib.sha256(staged.read_bytes()).hexdigest()
    os.replace(staged, path)
    return time.monotonic(), sha256


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Watch:
    """What the probes, ``/v1/models`` and the memory samples saw, with their times."""

    def __init__(self) -> None:
        self.probes: list[tuple[float, str, bool]] = []  # (time, replica, answered by the new)
        self.failed_probes: list[Outcome] = []
        self.shown: float | None = None  # /v1/models showed the new sha256
        self.dropped: float | None = None  # ... and no old version draining
        self.rss: list[tuple[float, float]] = []
        self.new_sha = ""  # the new version's file, once renamed into place

    def replicas_before(self, renamed: float) -> set[str]:
        return {replica for t, replica, _ in self.probes if t < renamed}

    def first_new(self, renamed: float) -> dict[str, float]:
        """Seconds from the rename to each replica's first answer from the new version."""
        first: dict[str, float] = {}
        for t, replica, new in self.probes:
            if new and replica not in first:
                first[replica] = t - renamed
        return first


async def probe(url: str, model: str, watch: Watch, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = await client.post("/v1/score", json={"model": model, "texts": [PROBE]})
                unknown = response.json()["results"][0]["num_unknown"]
                replica = response.headers.get("x-charlm-replica-address", "")
                watch.probes.append((started, replica, unknown == 0))
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                seconds = time.monotonic() - started
                outcome = Outcome("probe", "failed", "", started, seconds, type(exc).__name__)
                watch.failed_probes.append(outcome)
            await asyncio.sleep(0.1)


async def watch_server(url: str, model: str, pid: int, watch: Watch, stop: asyncio.Event) -> None:
    """Own server only: its RSS, and ``/v1/models`` once the new version's file is there."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            watch.rss.append((time.monotonic(), rss_mb(pid)))
            if watch.new_sha and watch.dropped is None:
                cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
                card = cards.get(model, {})
                if card.get("sha256") == watch.new_sha:
                    watch.shown = watch.shown or time.monotonic()
                    if card.get("draining") == 0:
                        watch.dropped = time.monotonic()
            await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, url: str, path: Path, pid: int | None) -> dict[str, Any]:
    watch, stop = Watch(), asyncio.Event()
    end = [float("inf")]
    load = asyncio.create_task(run_load(url, args.model, args.clients, lambda: end[0], seed=7))
    tasks = [asyncio.create_task(probe(url, args.model, watch, stop))]
    if pid is not None:
        tasks.append(asyncio.create_task(watch_server(url, args.model, pid, watch, stop)))
    await asyncio.sleep(args.before)
    renamed, watch.new_sha = await asyncio.to_thread(replace_with_new_version, path)
    replicas = watch.replicas_before(renamed) or {""}
    deadline = renamed + WAIT_S
    while time.monotonic() < deadline:
        swapped = replicas <= set(watch.first_new(renamed))
        if swapped and (pid is None or watch.dropped is not None):
            break
        await asyncio.sleep(0.1)
    end[0] = time.monotonic() + args.after
    result: LoadResult = await load
    stop.set()
    await asyncio.gather(*tasks)
    return figures(args, result, watch, renamed, replicas)


def figures(
    args: argparse.Namespace, result: LoadResult, watch: Watch, renamed: float, replicas: set[str]
) -> dict[str, Any]:
    result.outcomes += watch.failed_probes
    first = watch.first_new(renamed)
    out: dict[str, Any] = {
        "clients": args.clients,
        "requests": len(result.outcomes) + len(watch.probes),
        "failed": result.count(None, "failed"),
        "cut": result.count(None, "cut"),
        "aborted": result.count(None, "aborted"),
        "failures": dict(result.failures()),
        "new_answers_s": {r or "server": round(first[r], 2) for r in replicas if r in first},
        "all_new_s": round(max(first[r] for r in replicas), 2) if replicas <= set(first) else None,
        "shown_s": None if watch.shown is None else round(watch.shown - renamed, 2),
        "dropped_s": None if watch.dropped is None else round(watch.dropped - renamed, 2),
        "old_answers_after_swap": sum(
            1 for t, r, new in watch.probes if not new and r in first and t > renamed + first[r]
        ),
    }
    if watch.rss and watch.dropped is not None:
        before = [m for t, m in watch.rss if renamed - 3.0 <= t < renamed]
        after = [m for t, m in watch.rss if t >= watch.dropped + 0.5]
        if before and after:
            out["rss_mb"] = {
                "before": round(statistics.median(before), 1),
                "peak": round(max(m for _, m in watch.rss), 1),
                "after": round(statistics.median(after), 1),
            }
    print_table(result)
    return out


def report(out: dict[str, Any], weights_mb: float | None, smoke: bool) -> bool:
    everywhere = out["all_new_s"]
    ok = out["failed"] == 0 and out["old_answers_after_swap"] == 0
    ok = ok and everywhere is not None and everywhere <= TARGET_S
    lines = [
        f"requests: {out['requests']} (probes included); failed: {out['failed']} (target 0);"
        f" streams cut: {out['cut']}, aborted: {out['aborted']}"
    ]
    for replica, seconds in sorted(out["new_answers_s"].items()):
        lines.append(f"rename -> the new version answers on {replica}: {seconds:.1f} s")
    shown = "never" if everywhere is None else f"{everywhere:.1f} s"
    lines.append(
        f"rename -> the new version answers everywhere: {shown} (target within {TARGET_S:g} s)"
    )
    lines.append(
        f"answers of the old version after the new one answered: {out['old_answers_after_swap']}"
    )
    if out["shown_s"] is not None:
        lines.append(f"rename -> /v1/models shows the new sha256: {out['shown_s']:.1f} s")
    if out["dropped_s"] is not None:
        lines.append(f"rename -> the old version stopped and dropped: {out['dropped_s']:.1f} s")
    rss = out.get("rss_mb")
    if rss is not None and weights_mb is not None:
        grown = rss["after"] - rss["before"]
        verdict = "not judged in --smoke" if smoke else f"target under +{weights_mb / 2:.1f} MB"
        lines.append(
            f"server RSS: before the swap {rss['before']:.0f} MB, peak {rss['peak']:.0f} MB,"
            f" after the old version was dropped {rss['after']:.0f} MB ({grown:+.0f} MB;"
            f" the model's weights: {weights_mb:.1f} MB; {verdict})"
        )
        ok = ok and (smoke or grown < weights_mb / 2)
    lines.append(f"targets {'met' if ok else 'MISSED'}")
    print("\n".join(lines))
    return bool(ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after")
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=5.0, help="CHARLM_RELOAD_INTERVAL_S")
    parser.add_argument("--url", help="a running server or balancer (with --checkpoints)")
    parser.add_argument("--checkpoints", type=Path, help="the folder that server serves")
    parser.add_argument("--model", default="swap", help="model id (its file is replaced)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--smoke", action="store_true", help="seconds, a tiny model")
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.before, args.after = 4, 1.0, 1.0
        args.hidden_size, args.num_layers, args.interval = 32, 1, 0.5
    if (args.url is None) != (args.checkpoints is None):
        parser.error("--url and --checkpoints go together")
    print(f"hot swap: {args.clients} clients (half scoring, a quarter whole generations, a", end="")
    print(f" quarter streams), model {args.model!r}; the file is replaced after {args.before:g} s")
    if args.url is not None:
        out = asyncio.run(run(args, args.url, args.checkpoints / f"{args.model}.safetensors", None))
        ok = report(out, None, args.smoke)
    else:
        with tempfile.TemporaryDirectory(prefix="charlm-hot-swap-") as tmp:
            folder = Path(tmp) / "models"
            folder.mkdir()
            path = folder / f"{args.model}.safetensors"
            weights = write_first_version(path, args.hidden_size, args.num_layers)
            env = {"CHARLM_RELOAD_INTERVAL_S": str(args.interval)}
            server = Server(folder, env, Path(tmp) / "server.log")
            try:
                server.wait_ready()
                print(f"server {server.url}: lstm {args.num_layers}x{args.hidden_size},", end="")
                print(f" {weights / 1e6:.1f} MB of weights; checks its folder every", end="")
                print(f" {args.interval:g} s")
                out = asyncio.run(run(args, server.url, path, server.process.pid))
            finally:
                server.stop()
            ok = report(out, weights / 1e6, args.smoke)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
