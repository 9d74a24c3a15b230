"""Corpus reading, UTF-8 checks, the encoded-array cache and the train/validation split.

A corpus is one or more files (named directly, through folders, or through globs). Each file is
one document; the encoded stream puts ``BOS_ID`` before every document, so training sees the same
start-of-text convention that ``models.scoring`` uses. The stream is held as a compact numpy array
(``uint16`` when the vocabulary allows, ``int32`` otherwise), never as Python lists, and cached as
``.npy`` files keyed by a hash of the file contents and the settings that shape the encoding.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.files import atomic_write_bytes
from models.vocab import BOS_ID, CharVocab, VocabError, text_to_code_points

logger = logging.getLogger(__name__)

# a code point no text holds: marks document starts in the code-point stream before encoding
_DOC_MARK = np.uint32(0xFFFFFFFF)
_CACHE_VERSION = 1


class CorpusError(ValueError):
    """A corpus that cannot be used: missing files, invalid UTF-8, empty or too short."""


@dataclass
class Corpus:
    """An encoded corpus: vocabulary, training stream and validation documents."""

    vocab: CharVocab
    train_ids: np.ndarray  # (N,) uint16/int32, BOS before each document
    val_docs: list[np.ndarray]  # validation texts as id arrays, without BOS (scoring adds it)
    fingerprint: str  # sha256 of the files' contents and names, in order
    files: list[Path]

    @property
    def num_val_chars(self) -> int:
        return sum(len(d) for d in self.val_docs)


def resolve_files(specs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, sorted) and glob patterns into a list of files."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not found:
            raise CorpusError(f"{spec}: no such file, folder or matching glob")
        files.extend(found)
    return files


def decode_utf8(path: Path, data: bytes) -> str:
    """Strict UTF-8 decoding; an error names the file and the byte offset of the bad sequence."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}: invalid UTF-8 at byte offset {exc.start} ({exc.reason})"
        ) from None


def read_text_file(path: Path) -> str:
    """One UTF-8 file as text (a leading byte-order mark is dropped)."""
    text = decode_utf8(path, path.read_bytes())
    return text.removeprefix("\ufeff")


def fingerprint_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(path.name.encode("utf-8", "surrogateescape"))
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$CHARLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/charlm``, else ``~/.cache/charlm``."""
    if os.environ.get("CHARLM_CACHE_DIR"):
        return Path(os.environ["CHARLM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "charlm"


def _code_point_stream(files: list[Path]) -> np.ndarray:
    """All files' code points, each document preceded by ``_DOC_MARK``: (N,) uint32."""
    parts: list[np.ndarray] = []
    for path in files:
        parts.append(np.array([_DOC_MARK], dtype=np.uint32))
        parts.append(text_to_code_points(read_text_file(path)))
    return np.concatenate(parts)


def _split_val(ids: np.ndarray, num_val: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cut the last ``num_val`` positions off as validation, split into documents at BOS."""
    train = ids[: len(ids) - num_val]
    tail = ids[len(ids) - num_val :]
    starts = np.flatnonzero(tail == BOS_ID)
    pieces = np.split(tail, starts)
    docs = [p[1:] if len(p) and p[0] == BOS_ID else p for p in pieces]
    return train, [d for d in docs if len(d)]


def _compact(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    return ids.astype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32)


def load_corpus(
    data: list[str],
    *,
    val_data: list[str] | None = None,
    val_fraction: float = 0.1,
    min_char_count: int = 2,
    vocab: CharVocab | None = None,
    cache_dir: Path | None = None,
) -> Corpus:
    """Read, check, encode (or load from the cache) and split a corpus.

    The vocabulary is built from the training part only (characters rarer than ``min_char_count``
    become ``UNK_ID``) unless ``vocab`` is given (resuming, fine-tuning). Validation is
    ``val_data`` when given, else the last ``val_fraction`` of the stream.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise CorpusError(f"val fraction must be in [0, 1), got {val_fraction}")
    if min_char_count < 1:
        raise CorpusError(f"min char count must be >= 1, got {min_char_count}")
    files = resolve_files(data)
    val_files = resolve_files(val_data) if val_data else []
    fingerprint = fingerprint_files(files)
    val_fingerprint = fingerprint_files(val_files) if val_files else ""
    settings = {
        "version": _CACHE_VERSION,
        "fingerprint": fingerprint,
        "val": val_fingerprint,
        "val_fraction": 0.0 if val_files else val_fraction,
        "min_char_count": min_char_count,
        "vocab": vocab.to_dict() if vocab is not None else None,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
    cache = (cache_dir or default_cache_dir()) / "corpus"
    cached = _read_cache(cache, key)
    if cached is not None:
        cached_vocab, train, val_docs = cached
        logger.info("corpus loaded from cache %s", cache / key)
        return Corpus(cached_vocab, train, val_docs, fingerprint, files)

    stream = _code_point_stream(files)
    if len(stream) <= len(files):
        raise CorpusError(f"corpus is empty: {', '.join(str(f) for f in files)}")
    num_val = 0 if val_files else int(len(stream) * val_fraction)
    marks = stream == _DOC_MARK
    if vocab is None:
        train_cps = stream[: len(stream) - num_val]
        train_cps = train_cps[train_cps != _DOC_MARK]
        try:
            vocab = CharVocab.from_code_points(train_cps, min_count=min_char_count)
        except VocabError as exc:
            raise CorpusError(f"cannot build a vocabulary: {exc}") from None
    ids = vocab.encode_code_points(stream)
    ids[marks] = BOS_ID
    if val_files:
        train = ids
        val_docs = [vocab.encode_array(read_text_file(p)) for p in val_files]
        val_docs = [d for d in val_docs if len(d)]
    else:
        train, val_docs = _split_val(ids, num_val)
    train = _compact(train, len(vocab))
    val_docs = [_compact(d, len(vocab)) for d in val_docs]
    _write_cache(cache, key, vocab, train, val_docs)
    return Corpus(vocab, train, val_docs, fingerprint, files)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_cache(
    cache: Path, key: str, vocab: CharVocab, train: np.ndarray, val_docs: list[np.ndarray]
) -> None:
    try:
        folder = cache / key
        val = np.concatenate(val_docs) if val_docs else np.zeros(0, dtype=train.dtype)
        lengths = np.array([len(d) for d in val_docs], dtype=np.int64)
        atomic_write_bytes(folder / "train.npy", _npy_bytes(train))
        atomic_write_bytes(folder / "val.npy", _npy_bytes(val))
        atomic_write_bytes(folder / "val_lengths.npy", _npy_bytes(lengths))
        # the vocabulary is written last: its presence marks a complete entry
        atomic_write_bytes(folder / "vocab.json", vocab.to_json().encode("utf-8"))
    except OSError as exc:
        logger.warning("could not write the corpus cache in %s: %s", cache, exc)


def _read_cache(cache: Path, key: str) -> tuple[CharVocab, np.ndarray, list[np.ndarray]] | None:
    folder = cache / key
    if not (folder / "vocab.json").is_file():
        return None
    try:
        vocab = CharVocab.from_json((folder / "vocab.json").read_text("utf-8"))
        train = np.load(folder / "train.npy", allow_pickle=False)
        val = np.load(folder / "val.npy", allow_pickle=False)
        lengths = np.load(folder / "val_lengths.npy", allow_pickle=False)
    except (OSError, ValueError, VocabError) as exc:
        logger.warning("ignoring unreadable corpus cache %s: %s", folder, exc)
        return None
    if int(lengths.sum()) != len(val):
        return None
    val_docs = np.split(val, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return vocab, train, list(val_docs)
