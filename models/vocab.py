"""The character vocabulary: Unicode code points to ids and back.

Ids 0 and 1 are reserved: ``UNK_ID`` stands for any character outside the vocabulary (and, during
training, for characters rarer than ``min_count``, so the model learns to give it probability), and
``BOS_ID`` marks the start of a text: scoring and generation feed it as the first input, so the
first character of a text is scored too. Characters follow in code-point order, which makes the
vocabulary a pure function of the set of characters kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

UNK = "<unk>"
BOS = "<bos>"
UNK_ID = 0
BOS_ID = 1
NUM_SPECIAL = 2
MAX_CODE_POINT = 0x10FFFF


class VocabError(ValueError):
    """A vocabulary that cannot be built or read."""


class CharVocab:
    """Maps characters to ids; any text encodes, unknown characters become ``UNK_ID``."""

    def __init__(self, chars: Sequence[str]) -> None:
        ordered = sorted(set(chars), key=ord)
        if len(ordered) != len(chars):
            raise VocabError("vocabulary characters must be unique")
        for ch in ordered:
            if len(ch) != 1:
                raise VocabError(f"vocabulary entries must be single characters, got {ch!r}")
        self.chars: list[str] = ordered
        self._itos: list[str] = [UNK, BOS, *ordered]
        self._stoi: dict[str, int] = {ch: i + NUM_SPECIAL for i, ch in enumerate(ordered)}
        self._table: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_counts(
        cls, counts: dict[str, int], min_count: int = 1, max_size: int | None = None
    ) -> CharVocab:
        """Keep characters seen at least ``min_count`` times, the ``max_size`` most frequent."""
        kept = [(c, n) for c, n in counts.items() if n >= min_count]
        if max_size is not None and len(kept) > max_size - NUM_SPECIAL:
            kept.sort(key=lambda item: (-item[1], ord(item[0])))
            kept = kept[: max(max_size - NUM_SPECIAL, 0)]
        if not kept:
            raise VocabError("no character occurs often enough to build a vocabulary")
        return cls([c for c, _ in kept])

    @classmethod
    def from_code_points(
        cls, code_points: np.ndarray, min_count: int = 1, max_size: int | None = None
    ) -> CharVocab:
        """Build from an integer array of code points without making Python lists of characters."""
        counts = np.bincount(code_points.astype(np.int64, copy=False), minlength=1)
        present = np.nonzero(counts)[0]
        return cls.from_counts(
            {chr(int(cp)): int(counts[cp]) for cp in present}, min_count, max_size
        )

    @classmethod
    def from_text(cls, text: str, min_count: int = 1, max_size: int | None = None) -> CharVocab:
        return cls.from_code_points(text_to_code_points(text), min_count, max_size)

    # ------------------------------------------------------------------ encoding
    def __len__(self) -> int:
        return len(self._itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(tuple(self.chars))

    def __contains__(self, ch: object) -> bool:
        return ch in self._stoi

    def id_of(self, ch: str) -> int:
        return self._stoi.get(ch, UNK_ID)

    def token(self, idx: int) -> str:
        """The character for an id; the special ids give their ``<name>``."""
        return self._itos[idx]

    def _lookup_table(self) -> np.ndarray:
        if self._table is None:
            top = max((ord(c) for c in self.chars), default=0)
            table = np.full(top + 2, UNK_ID, dtype=np.int32)
            for ch, idx in self._stoi.items():
                table[ord(ch)] = idx
            self._table = table
        return self._table

    def encode_code_points(self, code_points: np.ndarray) -> np.ndarray:
        """Vectorised encoding: code points (any int dtype) to an int32 id array."""
        table = self._lookup_table()
        cps = code_points.astype(np.int64, copy=False)
        ids = np.full(cps.shape, UNK_ID, dtype=np.int32)
        inside = cps < len(table)
        ids[inside] = table[cps[inside]]
        return ids

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        return self.encode_code_points(text_to_code_points(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; the special ids decode to nothing, as they stand for no character."""
        return "".join(self._itos[i] for i in ids if i >= NUM_SPECIAL)

    def count_unknown(self, text: str) -> int:
        return int(np.count_nonzero(self.encode_array(text) == UNK_ID))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"specials": [UNK, BOS], "chars": "".join(self.chars)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharVocab:
        if not isinstance(data, dict) or data.get("specials") != [UNK, BOS]:
            raise VocabError("vocabulary JSON must have specials ['<unk>', '<bos>']")
        chars = data.get("chars")
        if not isinstance(chars, str):
            raise VocabError("vocabulary JSON must have a 'chars' string")
        return cls(list(chars))

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabError(f"vocabulary is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def text_to_code_points(text: str) -> np.ndarray:
    """A ``uint32`` array of the text's code points (lone surrogates included), no Python lists."""
    data = text.encode("utf-32-le", errors="surrogatepass")
    return np.frombuffer(data, dtype="<u4")
