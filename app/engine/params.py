"""What a generation request asks for, apart from its prompt: one frozen ``GenerationParams``.

The request schemas build it (``to_params()``), it is checked once, here, on construction, and it
travels whole: ``ModelEngine.generate(prompt, params)``, each completion's ``GenerationRequest``,
the scheduler and the decode batch, which turns it into the sampler's own per-row settings
(``models.sampling.SamplingParams``). The bounds below are also those the schemas publish, so the
API documents exactly what is checked here. Nothing in this module imports torch.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

DEFAULT_TEMPERATURE = 1.0
MAX_TEMPERATURE = 10.0
MAX_TOP_K = 100_000
MAX_N = 16  # completions of one prompt
MAX_STOPS = 4  # stop strings (OpenAI's limit)
MAX_STOP_CHARS = 64
# seeds travel as JSON numbers (doubles, exact integers below 2**53, as in JavaScript clients such
# as the playground); torch's generators take any seed below 2**63, far above ``MAX_SEED + MAX_N``
MAX_SEED = 2**53 - 1


class FinishReason(enum.StrEnum):
    """Why a completion ended; the values are the API's ``finish_reason``."""

    LENGTH = "length"  # ``max_chars`` reached
    STOP = "stop"  # a stop string was generated; it is not part of the text
    TIMEOUT = "timeout"  # the request ran past the engine's ``request_timeout_s``
    ABORT = "abort"  # the engine stopped first; the text is what was generated until then


@dataclass(frozen=True)
class GenerationParams:
    """``n`` completions of up to ``max_chars`` characters each; completion ``i`` draws from a
    generator seeded with ``seed + i`` (a random ``seed`` when None). ``temperature`` 0 is greedy;
    ``top_k`` 0 and ``top_p`` 1 set no limit; a completion ends before any of ``stop``."""

    max_chars: int
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.max_chars >= 0, f"max_chars must be >= 0, got {self.max_chars}"),
            (
                0.0 <= self.temperature <= MAX_TEMPERATURE,
                f"temperature must be in [0, {MAX_TEMPERATURE}], got {self.temperature}",
            ),
            (0 <= self.top_k <= MAX_TOP_K, f"top_k must be in [0, {MAX_TOP_K}], got {self.top_k}"),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}"),
            (1 <= self.n <= MAX_N, f"n must be in [1, {MAX_N}], got {self.n}"),
            (
                self.seed is None or 0 <= self.seed <= MAX_SEED,
                f"seed must be in [0, {MAX_SEED}], got {self.seed}",
            ),
            (
                len(self.stop) <= MAX_STOPS,
                f"at most {MAX_STOPS} stop strings, got {len(self.stop)}",
            ),
            (
                all(1 <= len(s) <= MAX_STOP_CHARS for s in self.stop),
                f"stop strings must have 1 to {MAX_STOP_CHARS} characters, got {self.stop!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def seeds(self) -> list[int]:
        """The seed of each completion: ``seed + i``, from a random ``seed`` when None (chosen
        so that every completion's seed can be sent back to reproduce it)."""
        base = self.seed if self.seed is not None else secrets.randbelow(MAX_SEED - MAX_N + 1)
        return [base + i for i in range(self.n)]
