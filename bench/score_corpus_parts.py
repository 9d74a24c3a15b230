"""The parts of ``bench.score_corpus``: its corpus and models, and each way of scoring."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from argparse import ArgumentTypeError
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_id_sequences
from models.vocab import CharVocab

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
BIN = Path(sys.executable).parent
#: the rss part's model: small enough that the run is about reading, batching and writing
RSS_SHAPE = {"embed_size": 8, "hidden_size": 16, "num_layers": 1}


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def source_text() -> str:
    if CORPUS.is_file():
        return CORPUS.read_text(encoding="utf-8")
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "the", "of", "and", "to", "in", "a"]
    return " ".join(rng.choice(words) for _ in range(200_000))


def parse_range(text: str) -> tuple[int, int]:
    """``"20-400"`` -> (20, 400): the shortest and longest record, in characters."""
    low, _, high = text.partition("-")
    try:
        lengths = int(low), int(high or low)
    except ValueError:
        message = f"expected LOW-HIGH characters, e.g. 20-400, not {text!r}"
        raise ArgumentTypeError(message) from None
    if not 1 <= lengths[0] <= lengths[1]:
        raise ArgumentTypeError(f"expected 1 <= LOW <= HIGH, not {text!r}")
    return lengths


def make_records(text: str, seed: int = 0, lengths: tuple[int, int] = (20, 400)) -> Iterator[str]:
    """Endless texts of ``lengths`` (20 to 400) characters cut from ``text``, newlines as
    spaces."""
    rng = random.Random(seed)
    flat = text.replace("\n", " ")
    while True:
        length = rng.randint(*lengths)
        start = rng.randrange(len(flat) - length)
        yield flat[start : start + length]


def write_jsonl(path: Path, records: Iterator[str], *, count: int = 0, size: int = 0) -> int:
    """Write ``count`` records, or records until ``size`` bytes; returns the records written."""
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while (count and written < count) or (size and handle.tell() < size):
            handle.write(json.dumps({"id": written, "text": next(records)}) + "\n")
            written += 1
    return written


def save_model(path: Path, vocab: CharVocab, shape: dict[str, int]) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig("lstm", len(vocab), **shape)).eval()
    save_checkpoint(path, model, vocab, training={"note": "untrained, for bench.score_corpus"})
    return path


def job_args(checkpoint: Path, corpus: Path, output: Path, *extra: str) -> list[str]:
    """A ``charlm-score`` command line; its totals go to ``output`` + ``.stats.json``."""
    return [
        str(BIN / "charlm-score"),
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(corpus),
        "--output",
        str(output),
        "--overwrite",
        "--no-progress",
        "--stats",
        f"{output}.stats.json",
        *extra,
    ]


def run_job(cmd: list[str]) -> dict[str, Any]:
    """Run a ``job_args`` command line; its totals (characters/s as the job counts them)."""
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return dict(json.loads(Path(cmd[cmd.index("--stats") + 1]).read_text()))


def bench_inprocess(checkpoint: Path, texts: list[str], batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint)
    ids = sorted((loaded.vocab.encode_array(t) for t in texts), key=len, reverse=True)
    score_id_sequences(loaded.model, ids[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(ids), batch):
        score_id_sequences(loaded.model, ids[i : i + batch])
    return sum(len(t) for t in texts) / (time.perf_counter() - started)


async def _http_client(url: str, model: str, texts: list[str], concurrency: int) -> float:
    todo = iter(texts)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def worker() -> int:
            chars = 0
            for text in todo:
                reply = await client.post("/v1/score", json={"model": model, "texts": [text]})
                reply.raise_for_status()
                chars += int(reply.json()["results"][0]["num_chars"])
            return chars

        started = time.perf_counter()
        chars = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
        return chars / (time.perf_counter() - started)


def bench_http(models: Path, model: str, texts: list[str], log: Path, threads: int) -> float:
    from tests.support import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARLM_")}
    env.update(OMP_NUM_THREADS=str(threads), CHARLM_LOG_LEVEL="warning")
    cmd = [str(BIN / "charlm-serve"), "--models-dir", str(models), "--port", str(port)]
    with log.open("wb") as handle:
        server = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"charlm-serve exited:\n{log.read_text()}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        asyncio.run(_http_client(url, model, texts[:32], 8))  # warm-up
        return asyncio.run(_http_client(url, model, texts, 8))
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_ray(checkpoint: Path, corpus: Path, work: Path, block_mb: float) -> dict[str, Any]:
    from tests.training.ray_cluster import two_node_cluster

    local = run_job(job_args(checkpoint, corpus, work / "local2.jsonl", "--threads", "2"))
    with two_node_cluster(work / "ray") as cluster:
        ray_flags = ["--ray", cluster.address, "--actors", "2", "--threads-per-actor", "1"]
        ray = run_job(
            job_args(checkpoint, corpus, work / "ray-out", *ray_flags, "--block-mb", str(block_mb))
        )
    manifest = json.loads((work / "ray-out" / "manifest.json").read_text())
    shards = [work / "ray-out" / s["file"] for s in manifest["shards"]]
    got = [json.loads(x) for p in shards for x in p.read_text().splitlines()]
    want = [json.loads(x) for x in (work / "local2.jsonl").read_text().splitlines()]
    same = [g["id"] for g in got] == [w["id"] for w in want]
    worst = max(
        abs(g["logprob"] - w["logprob"]) / max(1.0, abs(w["logprob"]))
        for g, w in zip(got, want, strict=False)
    )
    return {
        "local_2_threads": local["chars_per_s"],
        "ray": ray["chars_per_s"],
        "ray_seconds": ray["seconds"],
        # the actors' own rate: characters over their time on blocks, shared by two actors
        "ray_actors": ray["chars"] / max(ray["actor_seconds"] / 2, 1e-9),
        "same_records": same,
        "max_rel_diff": worst,
    }


def bench_rss(work: Path, vocab: CharVocab, size: int) -> dict[str, Any]:
    corpus = work / "large.jsonl"
    records = write_jsonl(corpus, make_records(source_text(), seed=1), size=size)
    checkpoint = save_model(work / "rss.safetensors", vocab, RSS_SHAPE)
    cmd = job_args(checkpoint, corpus, work / "large-scores.jsonl")
    stats = Path(cmd[cmd.index("--stats") + 1])
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    peak = 0
    while job.poll() is None:
        try:
            status = Path(f"/proc/{job.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) * 1024)
        except (OSError, IndexError):
            pass
        time.sleep(0.2)
    if job.returncode != 0:
        raise RuntimeError(f"charlm-score failed with exit code {job.returncode}")
    totals = json.loads(stats.read_text())
    input_bytes = corpus.stat().st_size
    corpus.unlink()
    return {
        "input_bytes": input_bytes,
        "records": records,
        "peak_rss": peak,
        "chars_per_s": totals["chars_per_s"],
    }
