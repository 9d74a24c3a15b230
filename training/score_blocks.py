"""A scoring job cut into blocks, for a cluster: the plan, one block's shard, the manifest.

The input is cut into blocks of about ``block_bytes``: byte ranges that end at a line end (text and
JSONL), or runs of row groups (Parquet), each knowing the position of its first record. Block
``i`` is scored into ``part-<i>.jsonl`` (and its bad records into ``part-<i>.errors.jsonl``), each
written to a temporary file and renamed into place: a block scored twice (a worker killed and its
block retried) writes the same shard again, so every record is in the output exactly once. The
shards in block order are the local job's output in input order; ``manifest.json``, written when
all are done, lists them with their counts. ``plan.json``, written first, lets ``--resume`` skip
the blocks whose shard exists, after checking that the input and settings are the same.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.base import CharLM
from models.vocab import CharVocab
from training.records import POSITION_KEYS, BadRecord, Record, RecordFormat, read_line_range
from training.score_job import ScoreSettings, score_lines
from training.score_output import ResumeError, encode_lines

PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
_SCAN_CHUNK = 1 << 22


@dataclass(frozen=True)
class Block:
    """Part of the input: bytes ``[start, end)`` or Parquet row ``groups``."""

    index: int
    first_position: int
    start: int = 0
    end: int = 0
    groups: tuple[int, ...] = ()

    @property
    def shard(self) -> str:
        return f"part-{self.index:05d}.jsonl"

    @property
    def errors_shard(self) -> str:
        return f"part-{self.index:05d}.errors.jsonl"


@dataclass
class JobPlan:
    """What a cluster job scores and how; stored as ``plan.json`` in the output folder."""

    input: str
    input_size: int
    input_mtime_ns: int
    format: dict[str, Any]
    block_bytes: int
    blocks: list[Block] = field(default_factory=list)

    def same_job(self, other: JobPlan) -> bool:
        """Whether ``other`` scores the same input, unchanged, with the same settings."""
        names = ("input", "input_size", "input_mtime_ns", "format", "block_bytes")
        return all(getattr(self, n) == getattr(other, n) for n in names)


def plan_blocks(path: str, fmt: RecordFormat, block_bytes: int) -> JobPlan:
    """Cut ``path`` into blocks of about ``block_bytes`` (one pass over a text file)."""
    info = os.stat(path)
    plan = JobPlan(
        str(Path(path).resolve()), info.st_size, info.st_mtime_ns, asdict(fmt), block_bytes
    )
    if fmt.kind == "parquet":
        plan.blocks = _group_blocks(path, fmt, block_bytes)
    else:
        plan.blocks = list(_line_blocks(path, block_bytes))
    return plan


def _line_blocks(path: str, block_bytes: int) -> Iterator[Block]:
    """Blocks that end at the first line end at least ``block_bytes`` after their start."""
    index, start, first = 0, 0, 1
    offset, lines_before = 0, 0  # of the chunk in hand
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            while (search := max(start + block_bytes - 1 - offset, 0)) < len(chunk):
                newline = chunk.find(b"\n", search)
                if newline < 0:
                    break
                end = offset + newline + 1
                yield Block(index, first, start, end)
                index += 1
                first = lines_before + chunk.count(b"\n", 0, newline + 1) + 1
                start = end
            lines_before += chunk.count(b"\n")
            offset += len(chunk)
    if start < offset:
        yield Block(index, first, start, offset)


def _group_blocks(path: str, fmt: RecordFormat, block_bytes: int) -> list[Block]:
    from training.records_parquet import open_parquet

    parquet, _ = open_parquet(path, fmt)
    blocks: list[Block] = []
    groups: list[int] = []
    size, first, position = 0, 1, 1
    for i in range(parquet.metadata.num_row_groups):
        group = parquet.metadata.row_group(i)
        groups.append(i)
        size += group.total_byte_size
        position += group.num_rows
        if size >= block_bytes:
            blocks.append(Block(len(blocks), first, groups=tuple(groups)))
            groups, size, first = [], 0, position
    if groups:
        blocks.append(Block(len(blocks), first, groups=tuple(groups)))
    return blocks


def block_records(path: str, fmt: RecordFormat, block: Block) -> Iterator[Record | BadRecord]:
    if fmt.kind == "parquet":
        from training.records_parquet import read_row_groups

        return read_row_groups(path, fmt, list(block.groups), block.first_position)
    return read_line_range(path, fmt, block.start, block.end, block.first_position)


def score_block(
    model: CharLM,
    vocab: CharVocab,
    path: str,
    fmt: RecordFormat,
    block: Block,
    settings: ScoreSettings,
    folder: Path,
) -> dict[str, Any]:
    """Score one block into its shards (bad records first); returns its counts."""
    started = time.monotonic()
    key = POSITION_KEYS[fmt.kind]
    scored: list[bytes] = []
    bad: list[bytes] = []
    counts = {"records": 0, "errors": 0, "chars": 0}
    items = block_records(path, fmt, block)
    for lines, errors in score_lines(model, vocab, items, key, settings):
        scored.append(encode_lines(lines))
        bad.append(encode_lines(errors))
        counts["records"] += len(lines)
        counts["errors"] += len(errors)
        counts["chars"] += sum(x["num_chars"] for x in lines)
    write_atomically(folder / block.errors_shard, bad)
    write_atomically(folder / block.shard, scored)
    seconds = round(time.monotonic() - started, 3)
    return {"block": block.index, **counts, "seconds": seconds}


def write_atomically(path: Path, parts: Iterable[bytes]) -> None:
    """Readers see no file or the whole file: write a temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with tmp.open("wb") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def shard_counts(folder: Path, block: Block) -> dict[str, Any]:
    """The counts of a block scored by an earlier run, read back from its shards."""
    records, chars = 0, 0
    with (folder / block.shard).open("rb") as handle:
        for raw in handle:
            records += 1
            chars += json.loads(raw)["num_chars"]
    with (folder / block.errors_shard).open("rb") as handle:
        errors = sum(1 for _ in handle)
    return {"block": block.index, "records": records, "errors": errors, "chars": chars}


def start_plan(folder: Path, plan: JobPlan, resume: bool, overwrite: bool) -> list[Block]:
    """Prepare ``folder`` for ``plan``; returns the blocks still to score."""
    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / PLAN_FILE
    ours = [plan_path, folder / MANIFEST_FILE, *folder.glob("part-*.jsonl")]
    if resume and plan_path.exists():
        earlier = load_plan(plan_path)
        if not earlier.same_job(plan):
            raise ResumeError(
                f"{folder}: its plan is for another input or other settings; refusing to resume"
            )
        return [b for b in earlier.blocks if not (folder / b.shard).exists()]
    if any(p.exists() for p in ours) and not overwrite:
        raise ResumeError(
            f"{folder} has no {PLAN_FILE} to resume from; pass --overwrite to start again"
            if resume
            else f"{folder} holds a scoring job; pass --resume to continue it or --overwrite"
        )
    for path in ours:
        path.unlink(missing_ok=True)
    write_atomically(plan_path, [json.dumps(_plan_dict(plan)).encode()])
    return list(plan.blocks)


def _plan_dict(plan: JobPlan) -> dict[str, Any]:
    data = asdict(plan)
    data["blocks"] = [
        [b.index, b.first_position, b.start, b.end, list(b.groups)] for b in plan.blocks
    ]
    return data


def load_plan(path: Path) -> JobPlan:
    data = json.loads(path.read_text(encoding="utf-8"))
    blocks = [
        Block(i, first, start, end, tuple(groups))
        for i, first, start, end, groups in data.pop("blocks")
    ]
    return JobPlan(**data, blocks=blocks)


def write_manifest(
    folder: Path, plan: JobPlan, counts: list[dict[str, Any]], totals: dict[str, Any]
) -> dict[str, Any]:
    """List every shard in block order with its counts; the job's totals."""
    by_block = {c["block"]: c for c in counts}
    missing = [b.index for b in plan.blocks if b.index not in by_block]
    if missing:
        raise RuntimeError(f"blocks {missing[:10]} have no shard; the job is not complete")
    shards = [
        {
            "file": b.shard,
            "errors_file": b.errors_shard,
            "first_position": b.first_position,
            **{k: by_block[b.index][k] for k in ("records", "errors", "chars")},
        }
        for b in plan.blocks
    ]
    manifest = {
        "format": "charlm-score-manifest",
        "version": 1,
        "input": plan.input,
        "position_key": POSITION_KEYS[plan.format["kind"]],
        "shards": shards,
        "totals": totals,
    }
    write_atomically(folder / MANIFEST_FILE, [json.dumps(manifest, indent=1).encode()])
    return manifest
