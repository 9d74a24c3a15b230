"""Scoring whole corpora: ``charlm-score`` against the other ways to score a file, in one run.

    python -m bench.score_corpus                 # the figures of docs/scoring.md
    python -m bench.score_corpus --size 200MB    # a smaller input for the memory part
    python -m bench.score_corpus --smoke         # seconds: proves the script runs

Parts (``--parts``, all by default; ``--smoke`` leaves out ``ray``):

- ``inprocess``: ``models.scoring.score_id_sequences`` over the corpus's texts in batches of the
  same size, sorted by length as the job sorts them: the model's own speed, no files.
- ``local``: ``charlm-score`` on the corpus as JSONL, its characters/s as the job itself counts
  them (reading, batching, scoring and writing; not the start-up). Target: >= 0.8x in-process.
- ``http``: a client looping over a third of the corpus, one text per ``POST /v1/score``, 8
  requests at a time, against ``charlm-serve`` on loopback (started with its command line).
  Target: the local job >= 3x this.
- ``ray``: the job on a two-node Ray cluster of this machine (one CPU each, two actors of one
  thread) against the local job with two threads; Ray's figure includes its start-up and the
  actors' model loading. Target: >= 0.8x the local job, same scores to 1e-6.
- ``rss``: the peak resident memory of ``charlm-score`` on a generated JSONL input of ``--size``
  (1 GB by default), scored with a very small model so that the run is about I/O and batching
  rather than the model. Target: below 1.5 GB.

The throughput parts run ``--repeats`` rounds, alternated so that a busy spell of a shared
machine falls on all of them; each figure is the median of its rounds. The models are untrained
LSTMs: the cost of a step does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.score_corpus_parts import (
    bench_http,
    bench_inprocess,
    bench_ray,
    bench_rss,
    job_args,
    make_records,
    parse_range,
    parse_size,
    run_job,
    save_model,
    source_text,
)
from models.vocab import CharVocab
from training.presets import PRESETS

PARTS = ("inprocess", "local", "http", "ray", "rss")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.score_corpus", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and inputs: seconds")
    p.add_argument("--shape", default="small", help="preset of the throughput model (small)")
    p.add_argument("--records", type=int, default=3000, help="records of the throughput corpus")
    p.add_argument(
        "--record-chars",
        type=parse_range,
        default=(20, 400),
        metavar="LOW-HIGH",
        help="lengths of the throughput corpus's records, uniform (20-400)",
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of the throughput parts (3)")
    p.add_argument("--size", type=parse_size, default=10**9, help="input of the rss part (1GB)")
    p.add_argument("--threads", type=int, default=2, help="threads of the single-process parts")
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch (64)")
    p.add_argument(
        "--cpus",
        help="run every part on these CPUs only, e.g. 0 or 0,1 (the server and its"
        " client too, so that each way of scoring has the same cores; default: all)",
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {','.join(PARTS)}")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    if args.smoke:
        args.shape, args.records, args.size, args.repeats = "tiny", 200, 2 * 10**6, 1
        parts = [x for x in parts if x != "ray"]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # children inherit it
    text = source_text()
    vocab = CharVocab.from_text(text)
    shape = {k: PRESETS[args.shape][k] for k in ("embed_size", "hidden_size", "num_layers")}
    figures: dict[str, Any] = {
        "shape": args.shape,
        "records": args.records,
        "record_chars": list(args.record_chars),
    }
    with tempfile.TemporaryDirectory(prefix="score-corpus-") as tmp:
        work = Path(tmp)
        checkpoint = save_model(work / "models" / f"{args.shape}.safetensors", vocab, shape)
        records = make_records(text, lengths=args.record_chars)
        texts = [next(records) for _ in range(args.records)]
        corpus = work / "corpus.jsonl"
        with corpus.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
        figures["chars"] = sum(len(t) for t in texts)
        print(
            f"corpus: {args.records:,} records of {args.record_chars[0]}-{args.record_chars[1]}"
            f" characters, {figures['chars']:,} in all; model"
            f" {args.shape} LSTM {shape}; {args.threads} threads; CPUs"
            f" {sorted(os.sched_getaffinity(0))}; median of {args.repeats} rounds"
        )
        local = job_args(
            checkpoint,
            corpus,
            work / "local.jsonl",
            "--threads",
            str(args.threads),
            "--batch-size",
            str(args.batch_size),
        )
        rounds: dict[str, list[float]] = {k: [] for k in ("inprocess", "local", "http")}
        for _ in range(args.repeats):  # alternated, so that a busy spell hits every part
            if "inprocess" in parts:
                rounds["inprocess"].append(
                    bench_inprocess(checkpoint, texts, args.batch_size, args.threads)
                )
            if "local" in parts:
                rounds["local"].append(run_job(local)["chars_per_s"])
            if "http" in parts:
                # a third of the texts: a client this slow would take minutes over them all
                rounds["http"].append(
                    bench_http(
                        work / "models",
                        args.shape,
                        texts[: len(texts) // 3 or 1],
                        work / "serve.log",
                        args.threads,
                    )
                )
        figures.update({k: statistics.median(v) for k, v in rounds.items() if v})
        figures["rounds"] = {k: v for k, v in rounds.items() if v}
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
