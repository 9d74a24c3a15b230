"""Reading corpora to score: plain text, JSON Lines, Parquet; bad records with their reasons."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from training.records import (
    BadRecord,
    InputError,
    Record,
    RecordFormat,
    detect_format,
    parse_lines,
    read_line_range,
    read_lines,
    read_records,
)

TEXT = RecordFormat(kind="text")
JSONL = RecordFormat(kind="jsonl")


def records_of(data: bytes, fmt: RecordFormat, start_after: int = 0) -> list[Record | BadRecord]:
    return list(parse_lines(read_lines(io.BytesIO(data), fmt.max_line_bytes), fmt, start_after))


def test_text_lines_are_records_with_their_line_numbers() -> None:
    data = "\ufeffhello\r\n\nwörld €\nlast".encode()
    assert records_of(data, TEXT) == [
        Record(1, "hello"),
        Record(2, ""),
        Record(3, "wörld €"),
        Record(4, "last"),
    ]


def test_bad_bytes_become_bad_records_and_reading_goes_on() -> None:
    data = b"good\n\xff\xfe not utf-8\nalso good\n"
    got = records_of(data, TEXT)
    assert got[0] == Record(1, "good") and got[2] == Record(3, "also good")
    assert isinstance(got[1], BadRecord) and got[1].position == 2
    assert got[1].reason.startswith("not UTF-8: invalid start byte at byte 0")


def test_a_line_over_the_byte_bound_is_skipped_without_reading_it_whole() -> None:
    fmt = RecordFormat(kind="text", max_chars=10)
    long_line = b"x" * (fmt.max_line_bytes + 5) + b"\n"
    got = records_of(b"short\n" + long_line + b"after\n", fmt)
    assert got[0] == Record(1, "short") and got[2] == Record(3, "after")
    assert got[1] == BadRecord(2, f"line longer than {fmt.max_line_bytes} bytes")


def test_text_over_max_chars_is_a_bad_record() -> None:
    fmt = RecordFormat(kind="text", max_chars=5)
    got = records_of(b"12345\n123456\n", fmt)
    assert got[0] == Record(1, "12345")
    assert got[1] == BadRecord(2, "text has 6 characters, over the limit of 5 (--max-chars)")


def test_jsonl_records_keep_their_ids_and_bad_ones_say_why() -> None:
    lines = [
        json.dumps({"id": "a", "text": "first"}),
        json.dumps({"text": "no id"}),
        "",
        json.dumps({"id": 7, "body": "wrong field"}),
        json.dumps({"id": 8, "text": 3}),
        json.dumps(["text"]),
        "{not json",
        json.dumps({"id": 9, "text": "lone \ud800 surrogate"}),
        json.dumps({"id": [1, 2], "text": "any id"}),
    ]
    got = records_of("\n".join(lines).encode(), JSONL)
    assert got == [
        Record(1, "first", "a"),
        Record(2, "no id"),
        BadRecord(4, "missing field 'text'", 7),
        BadRecord(5, "field 'text' is a number, not a string", 8),
        BadRecord(6, "not a JSON object but an array"),
        BadRecord(
            7, "not valid JSON: Expecting property name enclosed in double quotes at column 2"
        ),
        BadRecord(8, "text holds a lone surrogate U+D800 at offset 5", 9),
        Record(9, "any id", [1, 2]),
    ]


def test_custom_fields() -> None:
    fmt = RecordFormat(kind="jsonl", text_field="body", id_field="key")
    got = records_of(json.dumps({"key": "k1", "body": "text"}).encode(), fmt)
    assert got == [Record(1, "text", "k1")]


def test_start_after_passes_over_the_first_records() -> None:
    data = b"".join(f"line {i}\n".encode() for i in range(1, 11))
    got = records_of(data, TEXT, start_after=7)
    assert got == [Record(8, "line 8"), Record(9, "line 9"), Record(10, "line 10")]


def test_read_records_of_a_file_reports_bytes_read(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"a\nbb\nccc\n")
    source = read_records(str(path), TEXT)
    assert source.total == 9 and source.unit == "B"
    assert [r.text for r in source.records if isinstance(r, Record)] == ["a", "bb", "ccc"]
    assert source.done() == 9


def test_missing_input_is_an_input_error_before_reading(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open the input"):
        read_records(str(tmp_path / "absent.txt"), TEXT)


def test_a_byte_range_gives_its_lines_with_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"one\ntwo\nthree\nfour\n")
    start = len(b"one\n")
    end = len(b"one\ntwo\nthree\n")
    got = list(read_line_range(str(path), TEXT, start, end, first_position=2))
    assert got == [Record(2, "two"), Record(3, "three")]


def test_formats_by_suffix() -> None:
    assert detect_format("a/b.jsonl") == "jsonl"
    assert detect_format("b.NDJSON") == "jsonl"
    assert detect_format("b.parquet") == "parquet"
    assert detect_format("b.txt") == "text"
    assert detect_format("-") == "text"


def test_parquet_rows_ids_and_bad_values(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from training.records_parquet import read_row_groups, row_groups

    table = pa.table(
        {
            "id": [10, 11, 12, 13, 14],
            "text": ["alpha", None, "gamma", "delta", "x" * 20],
        }
    )
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=2)
    fmt = RecordFormat(kind="parquet", max_chars=10)
    source = read_records(str(path), fmt)
    assert source.total == 5 and source.unit == "rows"
    got = list(source.records)
    assert got[0] == Record(1, "alpha", 10)
    assert got[1] == BadRecord(2, "missing value in column 'text'", 11)
    assert got[2:4] == [Record(3, "gamma", 12), Record(4, "delta", 13)]
    assert isinstance(got[4], BadRecord) and "over the limit of 10" in got[4].reason
    assert [r.position for r in read_records(str(path), fmt, start_after=3).records] == [4, 5]
    assert row_groups(str(path), fmt) == [(1, 2), (3, 2), (5, 1)]
    assert list(read_row_groups(str(path), fmt, [1], 3)) == got[2:4]


def test_parquet_binary_column_and_missing_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"body": pa.array([b"ok", b"\xff"], type=pa.binary())}), path)
    got = list(read_records(str(path), RecordFormat(kind="parquet", text_field="body")).records)
    assert got[0] == Record(1, "ok")
    assert isinstance(got[1], BadRecord) and got[1].reason.startswith("not UTF-8")
    with pytest.raises(InputError, match="no column 'text' \\(columns: body\\)"):
        read_records(str(path), RecordFormat(kind="parquet"))
