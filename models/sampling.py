"""Sampling: temperature, top-k and top-p filters, seeded draws, stop strings, generation.

Each filter is a small function over logits ``(B, V)`` with per-row settings, so a batch may mix
requests with different settings. A draw consumes exactly one uniform number from the row's own
``torch.Generator`` per character, so the same seed gives the same text whatever runs beside it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.base import CharLM, State
from models.vocab import BOS_ID, UNK_ID, CharVocab

MAX_SEED = 2**63 - 1


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


def mask_special(logits: Tensor) -> Tensor:
    """Forbid ``<unk>`` and ``<bos>``: they stand for no character a text can hold."""
    return logits.index_fill(-1, _special_ids(logits.device), float("-inf"))


_SPECIAL_IDS: dict[torch.device, Tensor] = {}


def _special_ids(device: torch.device) -> Tensor:
    ids = _SPECIAL_IDS.get(device)
    if ids is None:
        ids = _SPECIAL_IDS[device] = torch.tensor([UNK_ID, BOS_ID], device=device)
    return ids


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
    """Inverse-CDF sampling: one uniform (B,) per row picks an index from ``probs`` (B, V)."""
    cdf = probs.cumsum(dim=-1)
    cdf = cdf / cdf[..., -1:].clamp_min(1e-30)
    index = torch.searchsorted(cdf, uniforms.unsqueeze(-1).to(cdf.dtype), right=True)
    return index.squeeze(-1).clamp(max=probs.shape[-1] - 1)


@dataclass(frozen=True)
class RowSettings:
    """The sampling settings of a batch's rows as tensors (B,), with what they have in common.

    ``choose_next`` builds one per call; a caller that draws for the same rows step after step
    (a server's decode batch) builds it once and calls ``choose_next_rows``.
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
        return cls(
            temperature=torch.tensor([p.temperature for p in params], device=device),
            top_k=torch.tensor([p.top_k for p in params], device=device),
            top_p=torch.tensor([p.top_p for p in params], device=device),
            all_greedy=all(p.greedy for p in params),
            any_greedy=any(p.greedy for p in params),
            unit_temperature=all(p.temperature == 1.0 for p in params),
            any_top_k=any(p.top_k for p in params),
            any_top_p=any(p.top_p < 1.0 for p in params),
        )


def choose_next(
    logits: Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
    uniforms: Tensor | None = None,
) -> Tensor:
    """Pick the next id for each row of ``logits`` (B, V) with its own settings and generator.

    ``uniforms`` (B,), when given, stands for the one number each row would draw from its
    generator now; callers that prefetch each generator's numbers in blocks (``torch.rand(n)``
    yields the same sequence as ``n`` single draws) pass them to save a call per row.
    """
    return choose_next_rows(logits, RowSettings.of(params, logits.device), generators, uniforms)


def choose_next_rows(
    logits: Tensor,
    settings: RowSettings,
    generators: Sequence[torch.Generator],
    uniforms: Tensor | None = None,
) -> Tensor:
    """``choose_next`` with the rows' settings already in tensors (see ``RowSettings``).

    Steps that would change nothing are skipped (dividing by a temperature of 1, the argmax when
    no row is greedy), so the result is the same bit for bit as with every step taken.
    """
    logits = mask_special(logits.float())
    if settings.all_greedy:
        return logits.argmax(dim=-1)
    scaled = logits
    if not settings.unit_temperature:
        scaled = apply_temperature(logits, settings.temperature)
    if settings.any_top_k:
        scaled = top_k_filter(scaled, settings.top_k)
    if settings.any_top_p:
        scaled = top_p_filter(scaled, settings.top_p)
    # one uniform per row from the row's generator, drawn on the CPU so results match on any device
    if uniforms is None:
        uniforms = torch.stack([torch.rand((), generator=g) for g in generators])
    uniforms = uniforms.to(logits.device)
    sampled = draw(scaled.softmax(dim=-1), uniforms)
    if not settings.any_greedy:
        return sampled
    return torch.where(settings.temperature > 0, sampled, logits.argmax(dim=-1))


def make_generator(seed: int | None) -> tuple[torch.Generator, int]:
    """A CPU generator and the seed it was given (a fresh random one when ``seed`` is None)."""
    if seed is None:
        seed = secrets.randbelow(MAX_SEED)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator, seed


class StopMatcher:
    """Finds the first stop string in a growing text; the text before it is the result."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)

    def find(self, text: str, new_chars: int = 1) -> int | None:
        """Index where a stop string starts, looking only where ``new_chars`` could complete one."""
        if not self.stops:
            return None
        window_start = max(0, len(text) - new_chars - self.longest + 1)
        best: int | None = None
        for stop in self.stops:
            index = text.find(stop, window_start)
            if index != -1 and (best is None or index < best):
                best = index
        return best


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
    """Continue ``prompt`` ``n`` times; completion ``i`` uses generator seed ``seed + i``."""
    if not model.can_generate:
        raise ValueError(f"architecture {model.config.arch!r} cannot generate text left to right")
    params = params or SamplingParams()
    base_seed = seed if seed is not None else secrets.randbelow(MAX_SEED - n)
    generators = [make_generator(base_seed + i)[0] for i in range(n)]
    matcher = StopMatcher(stop)
    logits, state = prime(model, vocab, prompt, n)
    texts = [""] * n
    ids: list[list[int]] = [[] for _ in range(n)]
    finished: list[str | None] = [None] * n
    for _ in range(max_chars):
        active = [i for i in range(n) if finished[i] is None]
        if not active:
            break
        next_ids = choose_next(logits, [params] * n, generators)
        for i in active:
            idx = int(next_ids[i])
            ids[i].append(idx)
            texts[i] += vocab.token(idx)
            cut = matcher.find(texts[i])
            if cut is not None:
                texts[i] = texts[i][:cut]
                finished[i] = "stop"
        logits_seq, state = model(next_ids.unsqueeze(-1), state)
        logits = logits_seq[:, -1]
    return [Generation(texts[i], finished[i] or "length", base_seed + i, ids[i]) for i in range(n)]
