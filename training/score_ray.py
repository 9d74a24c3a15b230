"""``charlm-score --ray``: the scoring job on a Ray cluster, with Ray Data (``charlm[ray]``).

The driver cuts the input into blocks (``training.score_blocks``) and makes a Ray dataset of them;
``map_batches`` hands the blocks to a pool of ``--actors`` actors, each of which loads the model
once and scores a block at a time into its shard with ``--threads-per-actor`` CPUs. Ray restarts
an actor whose process dies and retries the block it held; the shard is written atomically, so the
retry leaves each record in the output once. The input, the checkpoint and the output folder must
be visible to every node at the same path (one machine, or a shared file system), and charlm must
be installed on every node.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from training.records import RecordFormat
from training.score_blocks import (
    Block,
    plan_blocks,
    score_block,
    shard_counts,
    start_plan,
    write_manifest,
)
from training.score_job import ScoreSettings, ScoreTotals, check_scorable
from training.score_progress import Progress

logger = logging.getLogger(__name__)


class ScoreBlocks:
    """The actor: the model loaded once, then blocks scored into their shards."""

    def __init__(
        self,
        checkpoint: str,
        path: str,
        fmt: dict[str, Any],
        settings: dict[str, Any],
        folder: str,
        threads: int,
    ) -> None:
        torch.set_num_threads(threads)
        loaded = load_checkpoint(checkpoint)
        self.model, self.vocab = loaded.model, loaded.vocab
        self.path, self.folder = path, Path(folder)
        self.fmt = RecordFormat(**fmt)
        self.settings = ScoreSettings(**settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        counts = []
        for i in range(len(batch["index"])):
            block = Block(
                index=int(batch["index"][i]),
                first_position=int(batch["first_position"][i]),
                start=int(batch["start"][i]),
                end=int(batch["end"][i]),
                groups=tuple(int(g) for g in str(batch["groups"][i]).split(",") if g),
            )
            counts.append(
                score_block(
                    self.model, self.vocab, self.path, self.fmt, block, self.settings, self.folder
                )
            )
        return {key: [c[key] for c in counts] for key in counts[0]}


def run_ray(args: argparse.Namespace, fmt: RecordFormat, settings: ScoreSettings) -> dict[str, Any]:
    """Score ``args.input`` into the folder ``args.output`` on the cluster ``args.ray``."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'charlm[ray]'") from None
    if args.actors < 1 or args.threads_per_actor < 1 or args.block_mb <= 0:
        raise ValueError("--actors and --threads-per-actor must be >= 1, --block-mb > 0")
    check_scorable(load_checkpoint(args.checkpoint).model)  # fail here, not in every actor
    folder = Path(args.output)
    plan = plan_blocks(args.input, fmt, max(1, int(args.block_mb * 1e6)))
    todo = start_plan(folder, plan, args.resume, args.overwrite)
    waiting = {b.index for b in todo}
    done = [shard_counts(folder, b) for b in plan.blocks if b.index not in waiting]
    totals = ScoreTotals()  # of this run
    busy = [0.0]  # seconds the actors spent on blocks, this run
    if todo:
        ray.init(address=args.ray, logging_level=logging.WARNING, log_to_driver=False)
        try:
            _run_blocks(ray, args, fmt, settings, todo, totals, done, busy)
        finally:
            ray.shutdown()
    stats = {
        **{key: sum(c[key] for c in done) for key in ("records", "errors", "chars")},
        "seconds": round(totals.seconds, 3),
        "actor_seconds": round(busy[0], 3),
        "chars_per_s": round(totals.chars_per_s, 1),
        "output": str(folder),
        "errors_file": str(folder / "part-*.errors.jsonl"),
        "blocks": len(plan.blocks),
        "blocks_scored_now": len(todo),
    }
    write_manifest(folder, plan, done, stats)
    return stats


def _run_blocks(
    ray: Any,
    args: argparse.Namespace,
    fmt: RecordFormat,
    settings: ScoreSettings,
    todo: list[Block],
    totals: ScoreTotals,
    done: list[dict[str, Any]],
    busy: list[float],
) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    items = [
        {
            "index": b.index,
            "first_position": b.first_position,
            "start": b.start,
            "end": b.end,
            "groups": ",".join(str(g) for g in b.groups),
        }
        for b in todo
    ]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ScoreBlocks,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=args.threads_per_actor,
        fn_constructor_kwargs={
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "path": str(Path(args.input).resolve()),
            "fmt": asdict(fmt),
            "settings": asdict(settings),
            "folder": str(Path(args.output).resolve()),
            "threads": args.threads_per_actor,
        },
    )
    progress = Progress(
        lambda: len(done), len(done) + len(todo), "blocks", len(done), not args.no_progress
    )
    try:
        for row in dataset.iter_rows():
            counts = {k: int(v) for k, v in row.items() if k != "seconds"}
            busy[0] += float(row["seconds"])
            done.append(counts)
            totals.records += counts["records"]
            totals.errors += counts["errors"]
            totals.chars += counts["chars"]
            progress.update(totals, window_done=True)
    finally:
        progress.close()
