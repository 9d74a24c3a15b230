"""Records of a Parquet file (needs ``pyarrow``): the text column, and the id column if present.

Rows are read a batch at a time, so memory stays bounded; a row's position is its 1-based number
in the file. ``row_groups`` and ``read_row_groups`` let a distributed job read parts of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from training.records import BadRecord, InputError, Record, RecordFormat, RecordSource, check_text

_BATCH_ROWS = 1024


def open_parquet(path: str, fmt: RecordFormat) -> tuple[Any, list[str]]:
    """The ``pyarrow.parquet.ParquetFile`` and the columns to read; ``InputError`` if it cannot
    be read or lacks the text column."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    names = parquet.schema_arrow.names
    if fmt.text_field not in names:
        raise InputError(
            f"{path}: no column {fmt.text_field!r} (columns: {', '.join(names)}); see --text-field"
        )
    return parquet, [fmt.text_field] + ([fmt.id_field] if fmt.id_field in names else [])


def read_parquet(path: str, fmt: RecordFormat, start_after: int = 0) -> RecordSource:
    """Records of a Parquet file, after row ``start_after``."""
    parquet, columns = open_parquet(path, fmt)
    counter = [0]
    batches = parquet.iter_batches(_BATCH_ROWS, columns=columns)
    records = _rows(batches, fmt, start_after, 1, counter)
    return RecordSource(records, lambda: counter[0], parquet.metadata.num_rows, "rows")


def row_groups(path: str, fmt: RecordFormat) -> list[tuple[int, int]]:
    """``(first row position, rows)`` of each row group."""
    parquet, _ = open_parquet(path, fmt)
    groups, first = [], 1
    for i in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(i).num_rows
        groups.append((first, rows))
        first += rows
    return groups


def read_row_groups(
    path: str, fmt: RecordFormat, groups: list[int], first_position: int
) -> Iterator[Record | BadRecord]:
    """Records of consecutive row groups, the first row being ``first_position``."""
    parquet, columns = open_parquet(path, fmt)
    batches = parquet.iter_batches(_BATCH_ROWS, row_groups=groups, columns=columns)
    return _rows(batches, fmt, 0, first_position, [0])


def _rows(
    batches: Iterable[Any], fmt: RecordFormat, start_after: int, first: int, counter: list[int]
) -> Iterator[Record | BadRecord]:
    position = first - 1
    for batch in batches:
        counter[0] += batch.num_rows
        if position + batch.num_rows <= start_after:
            position += batch.num_rows
            continue
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if batch.num_columns > 1 else [None] * len(texts)
        for text, record_id in zip(texts, ids, strict=True):
            position += 1
            if position > start_after:
                yield _record(position, text, record_id, fmt)


def _record(position: int, value: Any, record_id: Any, fmt: RecordFormat) -> Record | BadRecord:
    if value is None:
        return BadRecord(position, f"missing value in column {fmt.text_field!r}", record_id)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return BadRecord(position, f"not UTF-8: {exc.reason} at byte {exc.start}", record_id)
    if not isinstance(value, str):
        kind = type(value).__name__
        return BadRecord(position, f"column {fmt.text_field!r} holds {kind}, not text", record_id)
    return check_text(position, value, record_id, fmt)
