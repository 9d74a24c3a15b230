"""``charlm-score``: score every record of a corpus file, on this machine or on a Ray cluster.

    charlm-score --checkpoint m.safetensors --input corpus.jsonl --output scores.jsonl
    charlm-score --checkpoint m.safetensors --input corpus.txt --output scores/ --ray auto

See docs/scoring.md for the output, bad records, ``--resume`` and the Ray runner.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import CheckpointError, load_checkpoint
from training import distributed
from training.records import (
    INPUT_FORMATS,
    POSITION_KEYS,
    InputError,
    RecordFormat,
    RecordSource,
    detect_format,
    read_records,
)
from training.score_job import ScoreSettings, ScoreTotals, check_scorable, run_local
from training.score_output import LineSink, ResumeError, prepare_resume
from training.score_progress import Progress

logger = logging.getLogger(__name__)


class UsageError(Exception):
    """Flags that do not fit together."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="charlm-score",
        description="Score each record of a corpus: log-probability, bits/char, perplexity.",
    )
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    p.add_argument("--input", default="-", help="corpus file, or - for stdin (-)")
    p.add_argument(
        "--output",
        default="-",
        help="scores as JSON lines, or - for stdout (-); with --ray: a folder",
    )
    p.add_argument(
        "--format",
        choices=("auto", *INPUT_FORMATS),
        default="auto",
        help="input format; auto: by suffix (.jsonl, .parquet), else text, one record a line",
    )
    p.add_argument("--text-field", default="text", help="JSONL field or Parquet column (text)")
    p.add_argument("--id-field", default="id", help="field copied to the output as id (id)")
    p.add_argument(
        "--max-chars", type=int, default=100_000, help="longer texts are bad records (100000)"
    )
    p.add_argument(
        "--errors", help="bad records as JSON lines (OUTPUT.errors.jsonl; stderr for stdout)"
    )
    p.add_argument("--resume", action="store_true", help="continue a killed job's output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--keep-text", action="store_true", help="copy each text into its score line")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward batch (64)")
    p.add_argument("--window", type=int, default=4096, help="records read ahead at most (4096)")
    p.add_argument("--threads", type=int, help="torch threads (default: the free cores)")
    p.add_argument("--device", choices=distributed.DEVICES, default="cpu", help="(cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--plot", help="write a histogram of bits/char to this PNG at the end")
    p.add_argument("--stats", help="write the job's totals to this JSON file at the end")
    ray = p.add_argument_group("Ray (pip install 'charlm[ray]')")
    ray.add_argument("--ray", metavar="auto|ADDRESS", help="run on this Ray cluster")
    ray.add_argument("--actors", type=int, default=2, help="scoring actors, one model each (2)")
    ray.add_argument("--threads-per-actor", type=int, default=1, help="CPUs per actor (1)")
    ray.add_argument("--block-mb", type=float, default=8.0, help="input per Ray block, MB (8)")
    return p


def score_main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="charlm-score: %(message)s")
    p = _parser()
    args = p.parse_args(argv)
    try:
        fmt = RecordFormat(
            kind=detect_format(args.input) if args.format == "auto" else args.format,
            text_field=args.text_field,
            id_field=args.id_field,
            max_chars=args.max_chars,
        )
        _check_flags(args, fmt)
        settings = ScoreSettings(
            batch_size=args.batch_size, window_records=args.window, keep_text=args.keep_text
        )
        if args.ray:
            from training.score_ray import run_ray

            stats = run_ray(args, fmt, settings)
            outputs = sorted(Path(args.output).glob("part-*[0-9].jsonl"))
        else:
            stats = _run_local(args, fmt, settings)
            outputs = [Path(args.output)]
    except (CheckpointError, InputError, ResumeError, UsageError, ValueError, OSError) as exc:
        p.exit(2, f"charlm-score: error: {exc}\n")
    print(_summary(stats), file=sys.stderr)
    if args.stats:
        Path(args.stats).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        from training.score_plot import plot_histogram

        plot_histogram(outputs, args.plot, title=Path(args.input).name)
    return 0


def _check_flags(args: argparse.Namespace, fmt: RecordFormat) -> None:
    if args.max_chars < 1:
        raise UsageError("--max-chars must be at least 1")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.output == "-" and (args.resume or args.ray or args.plot):
        raise UsageError("--resume, --ray and --plot need an --output file or folder, not stdout")
    if args.ray and args.input == "-":
        raise UsageError("--ray needs an --input file that every node can read, not stdin")
    if fmt.kind == "parquet" and args.input == "-":
        raise UsageError("Parquet cannot be read from stdin; give its path")
    if not args.ray and Path(args.output).is_dir():
        raise UsageError(f"{args.output} is a folder; the local job writes one JSONL file")
    fresh = not args.resume and not args.overwrite
    if not args.ray and fresh and args.output != "-" and _non_empty(Path(args.output)):
        raise UsageError(
            f"{args.output} exists; pass --resume to continue it or --overwrite to replace it"
        )


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _run_local(args: argparse.Namespace, fmt: RecordFormat, settings: ScoreSettings) -> Any:
    device = distributed.choose_device(args.device)
    torch.set_num_threads(args.threads or distributed.choose_num_threads())
    loaded = load_checkpoint(args.checkpoint, device=device)
    check_scorable(loaded.model)
    key = POSITION_KEYS[fmt.kind]
    errors_path = args.errors or (None if args.output == "-" else args.output + ".errors.jsonl")
    if args.resume:
        point = prepare_resume(args.output, errors_path, key)
        if point.after:
            logger.warning("resuming after %s %d (%d scored)", key, point.after, point.scored)
        after = point.after
    else:
        after = 0
        for path in (args.output, errors_path):
            if path not in (None, "-") and Path(path).exists():
                Path(path).write_bytes(b"")
    source = _skip_to_start(read_records(args.input, fmt, start_after=after))
    output = LineSink(args.output)
    errors = LineSink(errors_path) if errors_path else LineSink.stderr()
    progress = Progress(
        source.done, source.total, source.unit, source.done(), enabled=not args.no_progress
    )
    try:
        totals: ScoreTotals = run_local(
            loaded.model, loaded.vocab, source.records, output, errors, key, settings, progress
        )
    finally:
        progress.close()
        output.close()
        errors.close()
    stats = {**totals.as_dict(), "output": args.output, "errors_file": errors_path}
    return {**stats, "resumed_after": after} if args.resume else stats


def _skip_to_start(source: RecordSource) -> RecordSource:
    """Read the first record, so that records passed over by ``--resume`` are behind the
    progress bar's starting point."""
    first = next(source.records, None)
    if first is not None:
        source.records = itertools.chain([first], source.records)
    return source


def _summary(stats: dict[str, Any]) -> str:
    line = (
        f"charlm-score: {stats['records']:,} records scored ({stats['chars']:,} characters)"
        f" in {stats['seconds']:.1f} s, {stats['chars_per_s']:,.0f} chars/s"
    )
    if stats["errors"]:
        where = stats.get("errors_file") or "stderr"
        line += f"; bad records: {stats['errors']:,}, written to {where}"
    return line


if __name__ == "__main__":
    sys.exit(score_main())
