from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.vocab import BOS_ID, UNK_ID
from training.data import CorpusError, load_corpus, resolve_files


def test_invalid_utf8_names_file_and_byte_offset(tmp_path: Path, cache_dir: Path) -> None:
    good = tmp_path / "a.txt"
    good.write_text("fine text\n", encoding="utf-8")
    bad = tmp_path / "b.txt"
    bad.write_bytes("héllo ".encode() + b"\xff\xfe world")
    with pytest.raises(CorpusError) as info:
        load_corpus([str(good), str(bad)], cache_dir=cache_dir)
    message = str(info.value)
    assert str(bad) in message
    assert "byte offset 7" in message  # "h" + 2-byte "é" + "llo " = 7 bytes before 0xff


def test_empty_corpus_is_an_error(tmp_path: Path, cache_dir: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus([str(empty)], cache_dir=cache_dir)


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="nope"):
        resolve_files([str(tmp_path / "nope*.txt")])


def test_folders_and_globs_expand_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.txt", "a.txt", "sub/c.txt", ".hidden"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    assert [p.name for p in resolve_files([str(tmp_path)])] == ["a.txt", "b.txt", "c.txt"]
    assert [p.name for p in resolve_files([str(tmp_path / "*.txt")])] == ["a.txt", "b.txt"]


def test_stream_has_bos_per_document_and_validation_from_the_end(
    tmp_path: Path, cache_dir: Path
) -> None:
    first = tmp_path / "1.txt"
    second = tmp_path / "2.txt"
    first.write_text("abab" * 25, encoding="utf-8")
    second.write_text("cdcd" * 25, encoding="utf-8")
    corpus = load_corpus([str(first), str(second)], val_fraction=0.1, cache_dir=cache_dir)
    stream_len = 2 + 200
    num_val = int(stream_len * 0.1)
    ids = corpus.train_ids
    assert len(ids) == stream_len - num_val
    assert ids[0] == BOS_ID and ids[101] == BOS_ID
    assert np.count_nonzero(ids == BOS_ID) == 2
    assert corpus.vocab.decode(ids[1:5].tolist()) == "abab"
    # the validation text is the tail of the last document
    assert len(corpus.val_docs) == 1
    assert corpus.vocab.decode(corpus.val_docs[0].tolist()) == ("cdcd" * 25)[-num_val:]
    assert ids.dtype == np.uint16


def test_rare_characters_map_to_unknown(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("aaaa bbbb 日 aaaa\n" * 4 + "Z" + "a" * 40, encoding="utf-8")
    corpus = load_corpus([str(path)], val_fraction=0.0, min_char_count=2, cache_dir=cache_dir)
    assert "Z" not in corpus.vocab and "日" in corpus.vocab
    assert np.count_nonzero(corpus.train_ids == UNK_ID) == 1


def test_cache_is_reused_and_holds_plain_npy(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello world, " * 50, encoding="utf-8")
    first = load_corpus([str(path)], cache_dir=cache_dir)
    stored = list(cache_dir.rglob("train.npy"))
    assert len(stored) == 1
    np.testing.assert_array_equal(np.load(stored[0], allow_pickle=False), first.train_ids)
    second = load_corpus([str(path)], cache_dir=cache_dir)
    np.testing.assert_array_equal(first.train_ids, second.train_ids)
    assert second.vocab == first.vocab
    # different content, different entry
    path.write_text("other text, " * 50, encoding="utf-8")
    third = load_corpus([str(path)], cache_dir=cache_dir)
    assert third.fingerprint != first.fingerprint
    assert len(list(cache_dir.rglob("train.npy"))) == 2


def test_explicit_validation_files(tmp_path: Path, cache_dir: Path) -> None:
    train = tmp_path / "train.txt"
    val = tmp_path / "val.txt"
    train.write_text("abc " * 30, encoding="utf-8")
    val.write_text("cab?", encoding="utf-8")
    corpus = load_corpus([str(train)], val_data=[str(val)], cache_dir=cache_dir)
    assert len(corpus.train_ids) == 121
    assert corpus.val_docs[0].tolist() == corpus.vocab.encode("cab?")
    assert corpus.val_docs[0][-1] == UNK_ID
