"""Scoring whole corpora: ``charlm-score`` against the other ways to score a file, in one run.

    python -m bench.score_corpus                 # the figures of docs/scoring.md
    python -m bench.score_corpus --size 200MB    # a smaller memory run
    python -m bench.score_corpus --smoke         # seconds: proves the script runs

Parts (``--parts``, all by default; ``--smoke`` leaves out ``ray``):

- ``inprocess``: ``models.scoring.score_id_sequences`` over the corpus's texts in batches of the
  same size, sorted by length as the job sorts them: the model's own speed, no files.
- ``local``: ``charlm-score`` on the corpus as JSONL, its characters/s as the job itself counts
  them (reading, batching, scoring and writing; not the start-up). Target: >= 0.8x in-process.
- ``http``: a client looping over the corpus, one text per ``POST /v1/score``, 8 requests at a
  time, against ``charlm-serve`` on loopback (started with its command line). Target: the local
  job >= 3x this.
- ``ray``: the job on a two-node Ray cluster of this machine (one CPU each, two actors of one
  thread) against the local job with two threads; Ray's figure includes its start-up and the
  actors' model loading. Target: >= 0.8x the local job, same scores to 1e-6.
- ``rss``: the peak resident memory of ``charlm-score`` on a generated JSONL input of ``--size``
  (1 GB by default), scored with a very small model so that the run is about I/O and batching
  rather than the model. Target: below 1.5 GB.

The models are untrained LSTMs: the cost of a step does not depend on the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
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
from training.config import PRESETS

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
BIN = Path(sys.executable).parent
PARTS = ("inprocess", "local", "http", "ray", "rss")
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


def make_records(text: str, seed: int = 0) -> Iterator[str]:
    """Endless texts of 20 to 400 characters cut from ``text``, newlines as spaces."""
    rng = random.Random(seed)
    flat = text.replace("\n", " ")
    while True:
        length = rng.randint(20, 400)
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


def run_job(args: list[str], stats: Path) -> dict[str, Any]:
    cmd = [str(BIN / "charlm-score"), *args, "--no-progress", "--stats", str(stats)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return dict(json.loads(stats.read_text()))


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

    local = run_job(
        [
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(corpus),
            "--output",
            str(work / "local2.jsonl"),
            "--threads",
            "2",
        ],
        work / "local2.json",
    )
    with two_node_cluster(work / "ray") as cluster:
        ray = run_job(
            [
                "--checkpoint",
                str(checkpoint),
                "--input",
                str(corpus),
                "--output",
                str(work / "ray-out"),
                "--ray",
                cluster.address,
                "--actors",
                "2",
                "--threads-per-actor",
                "1",
                "--block-mb",
                str(block_mb),
            ],
            work / "ray.json",
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
    stats = work / "rss.json"
    cmd = [
        str(BIN / "charlm-score"),
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(corpus),
        "--output",
        str(work / "large-scores.jsonl"),
        "--no-progress",
        "--stats",
        str(stats),
    ]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, cwd=REPO)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.score_corpus", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and inputs: seconds")
    p.add_argument("--shape", default="small", help="preset of the throughput model (small)")
    p.add_argument("--records", type=int, default=3000, help="records of the throughput corpus")
    p.add_argument("--size", type=parse_size, default=10**9, help="input of the rss part (1GB)")
    p.add_argument("--threads", type=int, default=2, help="threads of the single-process parts")
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch (64)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {','.join(PARTS)}")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    if args.smoke:
        args.shape, args.records, args.size = "tiny", 200, 2 * 10**6
        parts = [x for x in parts if x != "ray"]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    text = source_text()
    vocab = CharVocab.from_text(text)
    shape = {k: PRESETS[args.shape][k] for k in ("embed_size", "hidden_size", "num_layers")}
    figures: dict[str, Any] = {"shape": args.shape, "records": args.records}
    with tempfile.TemporaryDirectory(prefix="score-corpus-") as tmp:
        work = Path(tmp)
        checkpoint = save_model(work / "models" / f"{args.shape}.safetensors", vocab, shape)
        records = make_records(text)
        texts = [next(records) for _ in range(args.records)]
        corpus = work / "corpus.jsonl"
        with corpus.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
        figures["chars"] = sum(len(t) for t in texts)
        print(
            f"corpus: {args.records:,} records, {figures['chars']:,} characters; model "
            f"{args.shape} LSTM {shape}; {args.threads} threads"
        )
        if "inprocess" in parts:
            figures["inprocess"] = bench_inprocess(checkpoint, texts, args.batch_size, args.threads)
        if "local" in parts:
            job = run_job(
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--input",
                    str(corpus),
                    "--output",
                    str(work / "local.jsonl"),
                    "--threads",
                    str(args.threads),
                    "--batch-size",
                    str(args.batch_size),
                ],
                work / "local.json",
            )
            figures["local"] = job["chars_per_s"]
        if "http" in parts:
            figures["http"] = bench_http(
                work / "models", args.shape, texts, work / "serve.log", args.threads
            )
        if "ray" in parts:
            block_mb = max(0.01, corpus.stat().st_size / 1e6 / 16)
            figures["ray"] = bench_ray(checkpoint, corpus, work, block_mb)
        if "rss" in parts:
            figures["rss"] = bench_rss(work, vocab, args.size)
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def _verdict(value: float, target: float, above: bool = True) -> str:
    ok = value >= target if above else value < target
    return f"target {'>=' if above else '<'} {target:g}: {'meets' if ok else 'misses'} target"


def report(f: dict[str, Any]) -> None:
    rows = [
        ("in-process score_id_sequences", f.get("inprocess")),
        ("charlm-score, local job", f.get("local")),
        ("client over /v1/score, 8 concurrent", f.get("http")),
    ]
    if "ray" in f:
        rows += [
            ("local job, 2 threads", f["ray"]["local_2_threads"]),
            ("Ray job, 2 nodes x 1 actor x 1 thread", f["ray"]["ray"]),
        ]
    print("\n| scorer | chars/s |\n| --- | ---: |")
    for name, value in rows:
        if value is not None:
            print(f"| {name} | {value:,.0f} |")
    print()
    if "local" in f and "inprocess" in f:
        ratio = f["local"] / f["inprocess"]
        print(f"- local job / in-process: {ratio:.2f} ({_verdict(ratio, 0.8)})")
    if "local" in f and "http" in f:
        ratio = f["local"] / f["http"]
        print(f"- local job / HTTP client: {ratio:.2f} ({_verdict(ratio, 3)})")
    if "ray" in f:
        ray = f["ray"]
        ratio = ray["ray"] / ray["local_2_threads"]
        steady = ray["ray_actors"] / ray["local_2_threads"]
        print(
            f"- Ray job / local job at 2 cores: {ratio:.2f} ({_verdict(ratio, 0.8)});"
            f" the actors' rate on their blocks / local job: {steady:.2f};"
            f" Ray job {ray['ray_seconds']:.1f} s with start-up; same records in order:"
            f" {ray['same_records']}, largest relative logprob difference"
            f" {ray['max_rel_diff']:.1e}"
        )
    if "rss" in f:
        rss = f["rss"]
        gb = rss["peak_rss"] / 1e9
        print(
            f"- peak RSS scoring {rss['input_bytes'] / 1e6:,.0f} MB of JSONL"
            f" ({rss['records']:,} records, {rss['chars_per_s']:,.0f} chars/s):"
            f" {gb:.2f} GB ({_verdict(gb, 1.5, above=False)})"
        )


if __name__ == "__main__":
    sys.exit(main())
