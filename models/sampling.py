"""Sampling: temperature, top-k and top-p filters, seeded draws, stop strings, generation.

Each filter is a small function over logits ``(B, V)`` with per-row settings, so a batch may mix
requests with different settings. The ``i``-th character of a completion is drawn with the
``i``-th uniform number of its seed from the counter-based generator ``models.rng`` (a hash of
the seed and ``i``), so the same seed gives the same text whatever runs beside it, and a whole
batch's numbers are one tensor expression.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models import rng
from models.base import CharLM, State
from models.vocab import BOS_ID, NUM_SPECIAL, UNK_ID, CharVocab

MAX_SEED = 2**63 - 1

# ``<unk>`` and ``<bos>`` stand for no character a text can hold: they are the first ids, so the
# sampler reads ``logits[..., NUM_SPECIAL:]`` (a view) and adds NUM_SPECIAL to what it picks
assert sorted((UNK_ID, BOS_ID)) == list(range(NUM_SPECIAL))


@dataclass(frozen=True)
class SamplingParams:
    """How to choose the next character. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 1.0
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0  # 1: no limit

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def apply_temperature(logits: Tensor, temperature: Tensor) -> Tensor:
    """Divide each row by its temperature (B,); rows at 0 are left for ``argmax``."""
    safe = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    return logits / safe.unsqueeze(-1)


def top_k_filter(logits: Tensor, top_k: Tensor) -> Tensor:
    """Keep each row's ``top_k`` (B,) largest logits; 0 keeps all."""
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    sorted_logits = logits.sort(dim=-1, descending=True).values
    threshold = sorted_logits.gather(-1, (k - 1).unsqueeze(-1))  # (B, 1)
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: Tensor, top_p: Tensor) -> Tensor:
    """Nucleus filter: keep the smallest set of top characters whose mass reaches ``top_p`` (B,)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly better characters
    drop_sorted = mass_before >= top_p.unsqueeze(-1)
    drop_sorted[..., 0] = False  # the best character always stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def draw(probs: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF sampling: one uniform in [0, 1) (B,) per row picks an index of ``probs`` (B, V).

    The CDF is summed and normalised in float64, so its last entry is exactly 1 and above any
    uniform: the pick is always a character of positive probability.
    """
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)
    cdf = cdf / cdf[..., -1:]
    index = torch.searchsorted(cdf, uniforms.to(cdf).unsqueeze(-1), right=True)  # (B, 1)
    return index.squeeze(-1).clamp(max=probs.shape[-1] - 1)


@dataclass(frozen=True)
class RowSettings:
    """The sampling settings of a batch's rows as tensors (B,), with what they have in common.

    ``choose_next`` builds one per call; a caller that draws for the same rows step after step
    (a server's decode batch) builds it once, and follows rows joining and leaving with ``cat``
    and ``select`` (tensor index operations).
    """

    temperature: Tensor  # (B,) float
    top_k: Tensor  # (B,) long
    top_p: Tensor  # (B,) float
    all_greedy: bool
    any_greedy: bool
    unit_temperature: bool  # every row samples at exactly 1: dividing would change nothing
    any_top_k: bool
    any_top_p: bool

    @classmethod
    def of(cls, params: Sequence[SamplingParams], device: torch.device) -> RowSettings:
        return cls.from_tensors(
            torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device),
            torch.tensor([p.top_k for p in params], dtype=torch.long, device=device),
            torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device),
        )

    @classmethod
    def from_tensors(cls, temperature: Tensor, top_k: Tensor, top_p: Tensor) -> RowSettings:
        greedy = temperature == 0
        return cls(
            temperature,
            top_k,
            top_p,
            all_greedy=bool(greedy.all()),
            any_greedy=bool(greedy.any()),
            unit_temperature=bool((temperature == 1).all()),
            any_top_k=bool((top_k > 0).any()),
            any_top_p=bool((top_p < 1).any()),
        )

    def __len__(self) -> int:
        return self.temperature.shape[0]

    def select(self, index: Tensor) -> RowSettings:
        """The settings of rows ``index`` (long), in that order."""
        return RowSettings.from_tensors(
            self.temperature.index_select(0, index),
            self.top_k.index_select(0, index),
            self.top_p.index_select(0, index),
        )

    def cat(self, other: RowSettings) -> RowSettings:
        """These rows, then ``other``'s."""
        return RowSettings.from_tensors(
            torch.cat([self.temperature, other.temperature]),
            torch.cat([self.top_k, other.top_k]),
            torch.cat([self.top_p, other.top_p]),
        )


def choose_next(logits: Tensor, params: Sequence[SamplingParams], uniforms: Tensor) -> Tensor:
    """Pick the next id for each row of ``logits`` (B, V) with its own settings, from one uniform
    number per row (B,) (``models.rng.uniforms`` of the row's seed and position)."""
    return choose_next_rows(logits, RowSettings.of(params, logits.device), uniforms)


def choose_next_rows(logits: Tensor, settings: RowSettings, uniforms: Tensor) -> Tensor:
    """``choose_next`` with the rows' settings already in tensors (see ``RowSettings``).

    Never picks ``<unk>`` or ``<bos>``. Steps that would change nothing are skipped (dividing by
    a temperature of 1, the argmax when no row is greedy), so the result is the same bit for bit
    as with every step taken.
    """
    logits = logits[..., NUM_SPECIAL:].float()  # (B, V - NUM_SPECIAL): no special id
    if settings.all_greedy:
        return logits.argmax(dim=-1) + NUM_SPECIAL
    scaled = logits
    if not settings.unit_temperature:
        scaled = apply_temperature(logits, settings.temperature)
    if settings.any_top_k:
        scaled = top_k_filter(scaled, settings.top_k)
    if settings.any_top_p:
        scaled = top_p_filter(scaled, settings.top_p)
    sampled = draw(scaled.softmax(dim=-1), uniforms)
    if settings.any_greedy:
        sampled = torch.where(settings.temperature > 0, sampled, logits.argmax(dim=-1))
    return sampled + NUM_SPECIAL


def random_seed(room: int = 1) -> int:
    """A fresh random seed ``s`` such that ``s + room - 1`` is still a valid seed."""
    return secrets.randbelow(MAX_SEED - room + 2)


class StopMatcher:
    """Finds where a growing text first holds one of the stop strings.

    "First" is the stop string that is complete after the fewest characters (as if the text were
    checked after every character), and of those that end at the same character, the longest.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        # every proper prefix of a stop string: what the end of a text may be the start of
        self._prefixes = {s[:k] for s in self.stops for k in range(1, len(s))}

    def find(self, text: str, new_chars: int | None = None) -> int | None:
        """Index where the first stop string starts, or None. ``new_chars``: only the last so many
        characters are new (no stop string is complete in the text before them), so only the
        window where one could end is searched."""
        if not self.stops:
            return None
        start = 0 if new_chars is None else max(0, len(text) - new_chars - self.longest + 1)
        best: tuple[int, int] | None = None  # (end, start) of the first stop string
        for stop in self.stops:
            index = text.find(stop, start)
            if index != -1 and (best is None or (index + len(stop), index) < best):
                best = (index + len(stop), index)
        return None if best is None else best[1]

    def held(self, text: str) -> int:
        """How many of the last characters of ``text`` could begin a stop string (they wait for
        the next characters to prove them innocent)."""
        for k in range(min(len(text), self.longest - 1), 0, -1):
            if text[-k:] in self._prefixes:
                return k
        return 0


@dataclass
class Generation:
    text: str
    finish_reason: str  # "length" or "stop"
    seed: int
    ids: list[int] = field(default_factory=list)


@torch.inference_mode()
def prime(model: CharLM, vocab: CharVocab, prompt: str, batch_size: int) -> tuple[Tensor, State]:
    """Read BOS and the prompt in one forward; return the next-character logits and the state."""
    ids = torch.tensor([[BOS_ID, *vocab.encode(prompt)]], device=model.device)
    logits, state = model(ids, model.initial_state(1, model.device))
    last = logits[:, -1].expand(batch_size, -1)
    return last, tuple(s.expand(batch_size, *s.shape[1:]).contiguous() for s in state)


@torch.inference_mode()
def generate(
    model: CharLM,
    vocab: CharVocab,
    prompt: str,
    max_chars: int,
    params: SamplingParams | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    n: int = 1,
) -> list[Generation]:
    """Continue ``prompt`` ``n`` times; completion ``i`` uses seed ``seed + i``: its ``j``-th
    character is drawn with ``models.rng.uniforms(seed + i, j)``."""
    if not model.can_generate:
        raise ValueError(f"architecture {model.config.arch!r} cannot generate text left to right")
    params = params or SamplingParams()
    settings = RowSettings.of([params] * n, model.device)
    base_seed = seed if seed is not None else random_seed(n)
    if not 0 <= base_seed <= MAX_SEED - n + 1:
        raise ValueError(f"seed must be in [0, {MAX_SEED - n + 1}], got {base_seed}")
    seeds = torch.arange(n, dtype=torch.int64, device=model.device) + base_seed  # (n,)
    matcher = StopMatcher(stop)
    logits, state = prime(model, vocab, prompt, n)
    texts = [""] * n
    ids: list[list[int]] = [[] for _ in range(n)]
    finished: list[str | None] = [None] * n
    for position in range(max_chars):
        active = [i for i in range(n) if finished[i] is None]
        if not active:
            break
        uniforms = rng.uniforms(seeds, torch.full_like(seeds, position))
        next_ids = choose_next_rows(logits, settings, uniforms)
        for i in active:
            idx = int(next_ids[i])
            ids[i].append(idx)
            texts[i] += vocab.token(idx)
            cut = matcher.find(texts[i], new_chars=1)
            if cut is not None:
                texts[i] = texts[i][:cut]
                finished[i] = "stop"
        logits_seq, state = model.step(next_ids.unsqueeze(-1), state)  # as a server's decode step
        logits = logits_seq[:, -1]
    return [Generation(texts[i], finished[i] or "length", base_seed + i, ids[i]) for i in range(n)]
