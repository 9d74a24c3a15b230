"""Records of a corpus to score, read one at a time: plain text, JSON Lines or Parquet.

Every input record becomes a ``Record`` (a text to score) or a ``BadRecord`` (the reason it cannot
be scored), never an exception, so one bad line cannot stop a job. Both carry the record's
``position``: its 1-based line in a text or JSONL file, its 1-based row in a Parquet file. That
position is what the output keeps besides the input's own id, and what ``--resume`` continues from.

- ``text``: each line is a record, without its line ending (``\\n`` or ``\\r\\n``); an empty line is
  a record of no characters. A UTF-8 byte-order mark at the start of the file is dropped.
- ``jsonl``: each line is a JSON object with the text in ``text_field`` and an optional id in
  ``id_field`` (any JSON value, copied as it is). Blank lines are skipped.
- ``parquet``: the ``text_field`` column (string or binary) and the ``id_field`` column when the
  file has one, read a row group batch at a time (needs ``pyarrow``).

Lines are read with a bound on their length, so a file without line breaks cannot fill memory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

InputFormat = Literal["text", "jsonl", "parquet"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("text", "jsonl", "parquet")
#: the output's name for a record's position, by input format
POSITION_KEYS: dict[str, str] = {"text": "line", "jsonl": "line", "parquet": "row"}
_SUFFIXES: dict[str, InputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SKIP_CHUNK = 1 << 20


class InputError(Exception):
    """The input as a whole cannot be read: missing file, unknown format, absent column."""


@dataclass(frozen=True, slots=True)
class Record:
    """A text to score and where it came from."""

    position: int
    text: str
    id: Any = None  # the input's id, or None when the record has none


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that cannot be scored, and why."""

    position: int
    reason: str
    id: Any = None


@dataclass(frozen=True)
class RecordFormat:
    """How records are found in the input and which are refused."""

    kind: InputFormat = "text"
    text_field: str = "text"
    id_field: str = "id"
    max_chars: int = 100_000

    @property
    def max_line_bytes(self) -> int:
        """Longest line read whole: the longest text in UTF-8, or in JSON with \\u escapes."""
        per_char = 12 if self.kind == "jsonl" else 4
        return per_char * self.max_chars + 65_536


def detect_format(path: str) -> InputFormat:
    """The format a file name implies; anything else (and stdin) is plain text."""
    return _SUFFIXES.get(Path(path).suffix.lower(), "text") if path != "-" else "text"


def read_lines(handle: BinaryIO, max_bytes: int, end: int | None = None) -> Iterator[bytes | None]:
    """Each line of ``handle`` with its ending, or None for a line longer than ``max_bytes``
    (which is skipped without being held in memory); up to byte offset ``end`` if given."""
    while end is None or handle.tell() < end:
        line = handle.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:
                rest = handle.readline(_SKIP_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
        else:
            yield line


def parse_lines(
    lines: Iterable[bytes | None],
    fmt: RecordFormat,
    start_after: int = 0,
    first_position: int = 1,
) -> Iterator[Record | BadRecord]:
    """Records of a text or JSONL input given as raw lines (``read_lines``), the first being
    line ``first_position``; lines up to ``start_after`` are passed over unread."""
    for position, raw in enumerate(lines, start=first_position):
        if position <= start_after:
            continue
        if raw is None:
            yield BadRecord(position, f"line longer than {fmt.max_line_bytes} bytes")
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRecord(position, f"not UTF-8: {exc.reason} at byte {exc.start}")
            continue
        if position == 1 and line.startswith("\ufeff"):
            line = line[1:]
        line = line.removesuffix("\n").removesuffix("\r")
        if fmt.kind == "jsonl":
            if line.strip():
                yield _json_record(position, line, fmt)
        else:
            yield check_text(position, line, None, fmt)


def _json_record(position: int, line: str, fmt: RecordFormat) -> Record | BadRecord:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadRecord(position, f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return BadRecord(position, "not valid JSON: nested too deeply")
    if not isinstance(value, dict):
        return BadRecord(position, f"not a JSON object but {_json_kind(value)}")
    record_id = value.get(fmt.id_field)
    if fmt.text_field not in value or value[fmt.text_field] is None:
        return BadRecord(position, f"missing field {fmt.text_field!r}", record_id)
    text = value[fmt.text_field]
    if not isinstance(text, str):
        return BadRecord(
            position, f"field {fmt.text_field!r} is {_json_kind(text)}, not a string", record_id
        )
    return check_text(position, text, record_id, fmt)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "null"


def check_text(position: int, text: str, record_id: Any, fmt: RecordFormat) -> Record | BadRecord:
    """A ``Record``, or a ``BadRecord`` for a text over the limit or with a lone surrogate."""
    if len(text) > fmt.max_chars:
        reason = f"text has {len(text)} characters, over the limit of {fmt.max_chars}"
        return BadRecord(position, reason + " (--max-chars)", record_id)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        reason = f"text holds a lone surrogate U+{code:04X} at offset {exc.start}"
        return BadRecord(position, reason, record_id)
    return Record(position, text, record_id)


@dataclass
class RecordSource:
    """Records to score, and how far through its input the reading is: ``done()`` of ``total``
    ``unit`` (bytes of a file, rows of a Parquet file; no total for stdin)."""

    records: Iterator[Record | BadRecord]
    done: Callable[[], int]
    total: int | None = None
    unit: str = "B"


def read_records(source: str, fmt: RecordFormat, start_after: int = 0) -> RecordSource:
    """Records of ``source`` (a path, or ``-`` for stdin) in input order, one at a time.

    The input is opened before this returns, so a missing file raises ``InputError`` here; the
    first ``start_after`` records are passed over.
    """
    if fmt.kind == "parquet":
        if source == "-":
            raise InputError("Parquet cannot be read from stdin; give its path")
        from training.records_parquet import read_parquet

        return read_parquet(source, fmt, start_after)
    if source == "-":
        lines = read_lines(sys.stdin.buffer, fmt.max_line_bytes)
        return RecordSource(parse_lines(lines, fmt, start_after), done=lambda: 0)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the generator when it ends
        size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise InputError(f"{source}: cannot open the input ({exc.strerror})") from exc
    records = parse_lines(read_lines(handle, fmt.max_line_bytes), fmt, start_after)
    return RecordSource(_closing(handle, records), lambda: _tell(handle, size), size)


def read_line_range(
    path: str, fmt: RecordFormat, start: int, end: int, first_position: int
) -> Iterator[Record | BadRecord]:
    """Records of the lines in bytes ``[start, end)`` of a text or JSONL file; ``start`` is the
    beginning of line ``first_position`` (see ``training.score_blocks``)."""
    handle = open(path, "rb")  # noqa: SIM115 - closed by the generator when it ends
    handle.seek(start)
    lines = read_lines(handle, fmt.max_line_bytes, end)
    return _closing(handle, parse_lines(lines, fmt, first_position=first_position))


def _tell(handle: BinaryIO, size: int) -> int:
    return size if handle.closed else handle.tell()


def _closing(
    handle: BinaryIO, records: Iterator[Record | BadRecord]
) -> Iterator[Record | BadRecord]:
    with handle:
        yield from records
