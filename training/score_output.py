"""What a scoring job writes: one JSON line per scored record, one per bad record, and how a killed
job's output is found to continue it.

A score line keeps the record's position (``line``, or ``row`` for Parquet), its ``id`` when the
input has one, and adds ``logprob`` (natural log), ``bits_per_char``, ``perplexity`` (finite, see
``models.scoring.perplexity``), ``num_chars`` and ``num_unknown``; an empty text scores 0 bits
and perplexity 1. A bad-record line has the position, the id and the ``reason``.

Lines are written in input order, a whole line per write, so a killed job leaves complete lines and
at most one partial line at the end. ``prepare_resume`` drops that partial line, finds the
position of the last complete score line and cuts the error file back to that position: the
records after it are read and judged again, so nothing is lost and nothing written twice.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from models.scoring import TextScore
from training.records import BadRecord, Record

_READ_CHUNK = 1 << 20


class ResumeError(Exception):
    """An existing output that a job cannot continue."""


def score_line(
    record: Record, score: TextScore, position_key: str, keep_text: bool = False
) -> dict[str, Any]:
    """The output record of a scored text."""
    line: dict[str, Any] = {position_key: record.position}
    if record.id is not None:
        line["id"] = record.id
    line.update(
        logprob=score.logprob,
        bits_per_char=score.bits_per_char,
        perplexity=score.perplexity,
        num_chars=score.num_chars,
        num_unknown=score.num_unknown,
    )
    if keep_text:
        line["text"] = record.text
    return line


def error_line(bad: BadRecord, position_key: str) -> dict[str, Any]:
    """The error-file record of a bad record."""
    line: dict[str, Any] = {position_key: bad.position}
    if bad.id is not None:
        line["id"] = bad.id
    line["reason"] = bad.reason
    return line


def encode_lines(lines: Iterable[dict[str, Any]]) -> bytes:
    """JSON lines as UTF-8; non-finite numbers (an id that is one) are refused by JSON, so they
    are written as strings."""
    return "".join(json.dumps(x, ensure_ascii=False, default=str) + "\n" for x in lines).encode()


class LineSink:
    """An append-only JSON-lines file, or stdout for ``-``; each ``write`` is one system call."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path in ("-", "<stderr>"):
            self._handle: IO[bytes] = sys.stdout.buffer if path == "-" else sys.stderr.buffer
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()

    def write(self, lines: Iterable[dict[str, Any]]) -> None:
        data = encode_lines(lines)
        if data:
            view = memoryview(data)
            while view:
                written = self._handle.write(view)
                view = view[written or 0 :]
            self._handle.flush()

    @classmethod
    def stderr(cls) -> LineSink:
        return cls("<stderr>")

    def close(self) -> None:
        if self.path not in ("-", "<stderr>"):
            self._handle.close()


@dataclass(frozen=True)
class ResumePoint:
    """Where a job continues: after input position ``after``; ``scored`` lines are kept."""

    after: int = 0
    scored: int = 0
    errors: int = 0


def prepare_resume(output: str, errors: str | None, position_key: str) -> ResumePoint:
    """Make the output and error files end at the last complete score line; say where that is.

    A missing or empty output is a fresh start (and an error file beside it is emptied).
    """
    out = Path(output)
    if not out.exists() or out.stat().st_size == 0:
        if errors is not None and Path(errors).exists():
            os.truncate(errors, 0)
        return ResumePoint()
    scored, end, last = _complete_lines(out)
    if scored:
        first = _read_line(out, 0)
        _position(first, out, 1, position_key)
        after = _position(last, out, scored, position_key)
    else:
        after = 0
    os.truncate(out, end)
    kept = _cut_errors(Path(errors), after, position_key) if errors is not None else 0
    return ResumePoint(after, scored, kept)


def _complete_lines(path: Path) -> tuple[int, int, bytes]:
    """Count of complete lines, the byte offset after the last one and that line's bytes."""
    count, end, last_start, offset = 0, 0, 0, 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            newlines = chunk.count(b"\n")
            if newlines:
                last = chunk.rindex(b"\n")
                before = chunk.rfind(b"\n", 0, last)
                last_start = offset + before + 1 if before >= 0 else end
                count += newlines
                end = offset + last + 1
            offset += len(chunk)
        handle.seek(last_start)
        last_line = handle.read(end - last_start) if count else b""
    return count, end, last_line


def _read_line(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.readline()


def _position(raw: bytes, path: Path, number: int, position_key: str) -> int:
    """The position in a complete output line, or ``ResumeError`` naming the line."""
    try:
        value = json.loads(raw)
        position = value[position_key]
        if isinstance(position, int) and not isinstance(position, bool) and position > 0:
            return position
    except (ValueError, TypeError, KeyError):
        pass
    raise ResumeError(
        f"{path}: line {number} is not a score record with a {position_key!r} position;"
        " refusing to resume (remove the file to start again)"
    )


def _cut_errors(path: Path, after: int, position_key: str) -> int:
    """Keep the error lines up to position ``after``; returns how many are kept."""
    if not path.exists():
        return 0
    kept, end = 0, 0
    with path.open("rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(), b""), 1):
            if not raw.endswith(b"\n") or _position(raw, path, number, position_key) > after:
                break
            kept += 1
            end += len(raw)
    os.truncate(path, end)
    return kept
