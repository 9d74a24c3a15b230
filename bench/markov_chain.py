"""Markov chains over printable characters whose entropy rate is known exactly.

A chain of order ``k`` over an alphabet of ``A`` characters has one next-character distribution
per context (the ``k`` characters before), ``A**k`` rows of ``A`` probabilities. A context is
numbered in base ``A``, its oldest character the most significant digit, so the context after
``c`` followed by ``y`` is ``(c % A**(k-1)) * A + y``.

The entropy rate is ``H = sum_c pi(c) H(next | c)`` in bits per character, ``pi`` the stationary
distribution over contexts (power iteration on the context chain). The oracle is the chain
itself scoring a text; the count model is the add-delta estimate of the chain from a text,
the reference a model of the right order reaches (no general model is told the order).
"""

from __future__ import annotations

import string
from bisect import bisect_right
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: the characters an alphabet of A takes the first A of: letters, digits, punctuation, space
CHARACTERS = (
    string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation + " "
)
#: the most transition probabilities a chain may have (2**21 float64 cells, 16 MB as an array;
#: sampling holds them as Python lists, about 64 MB); larger chains need far more text to learn
MAX_CELLS = 2**21
#: the default Dirichlet concentration of a random chain's rows (see ``random_chain``)
CONCENTRATION = 0.3


class ConvergenceError(RuntimeError):
    """Power iteration did not reach the stationary distribution."""


@dataclass(frozen=True)
class MarkovChain:
    """``probs[c, y]``: the probability of character ``alphabet[y]`` after context ``c``."""

    alphabet: str
    order: int
    probs: np.ndarray  # (A**order, A) float64, rows sum to 1

    def __post_init__(self) -> None:
        size = len(self.alphabet)
        if size < 2 or len(set(self.alphabet)) != size:
            raise ValueError(
                f"the alphabet needs at least 2 distinct characters: {self.alphabet!r}"
            )
        if self.order < 1:
            raise ValueError(f"the order must be >= 1, got {self.order}")
        if self.probs.shape != (size**self.order, size):
            raise ValueError(
                f"probs must be ({size**self.order}, {size}) for order {self.order} over"
                f" {size} characters, got {self.probs.shape}"
            )
        if (self.probs < 0).any() or not np.allclose(self.probs.sum(axis=1), 1.0, atol=1e-9):
            raise ValueError("every row of probs must be a probability distribution")

    @property
    def size(self) -> int:
        return len(self.alphabet)

    @property
    def num_contexts(self) -> int:
        return int(self.probs.shape[0])


def check_size(order: int, size: int) -> None:
    """``ValueError`` unless a chain of ``order`` over ``size`` characters can be built here."""
    if not 2 <= size <= len(CHARACTERS):
        raise ValueError(f"the alphabet size must be in [2, {len(CHARACTERS)}], got {size}")
    if order < 1:
        raise ValueError(f"the order must be >= 1, got {order}")
    if size ** (order + 1) > MAX_CELLS:
        raise ValueError(
            f"order {order} over {size} characters has {size ** (order + 1):,} transition"
            f" probabilities; at most {MAX_CELLS:,} (a few MB of text could not teach more)"
        )


def random_chain(
    order: int, size: int, seed: int | np.random.SeedSequence, concentration: float = CONCENTRATION
) -> MarkovChain:
    """Each context's row drawn from a symmetric Dirichlet(``concentration``).

    Below 1 the rows are uneven: at 0.3 a few characters carry most of each row's mass, as in
    text, and a row's entropy is about 1.4 bits under log2(A), so the context matters.
    """
    check_size(order, size)
    if concentration <= 0:
        raise ValueError(f"the concentration must be > 0, got {concentration}")
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(size, concentration), size=size**order)
    return MarkovChain(CHARACTERS[:size], order, probs)


class Stationary(NamedTuple):
    probs: np.ndarray  # (A**order,) the stationary distribution over contexts
    iterations: int
    residual: float  # L1 distance between pi and pi moved one step


def step_contexts(chain: MarkovChain, pi: np.ndarray) -> np.ndarray:
    """The distribution over contexts one character after ``pi``: (A**order,)."""
    size = chain.size
    mass = pi[:, None] * chain.probs  # (C, A): context c followed by y
    # the next context forgets c's oldest character: sum over it
    return mass.reshape(size, chain.num_contexts // size, size).sum(axis=0).reshape(-1)


def stationary_distribution(
    chain: MarkovChain, tol: float = 1e-12, max_iterations: int = 100_000
) -> Stationary:
    """Power iteration from the uniform distribution until a step moves it less than ``tol``."""
    pi = np.full(chain.num_contexts, 1.0 / chain.num_contexts)
    for iteration in range(1, max_iterations + 1):
        moved = step_contexts(chain, pi)
        moved /= moved.sum()
        residual = float(np.abs(moved - pi).sum())
        pi = moved
        if residual < tol:
            return Stationary(pi, iteration, residual)
    raise ConvergenceError(
        f"no stationary distribution after {max_iterations} iterations (step {residual:.2e})"
    )


def row_entropies(probs: np.ndarray) -> np.ndarray:
    """Each row's entropy in bits: (rows,)."""
    logs = np.log2(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=1)


def entropy_rate(chain: MarkovChain, pi: np.ndarray | None = None) -> float:
    """``sum_c pi(c) H(next | c)`` in bits per character."""
    if pi is None:
        pi = stationary_distribution(chain).probs
    return float(pi @ row_entropies(chain.probs))


def sample_ids(
    chain: MarkovChain, length: int, seed: int | np.random.SeedSequence, pi: np.ndarray
) -> np.ndarray:
    """``length`` character ids from the chain, its first context drawn from ``pi`` (so the
    text is stationary from its first character): (length,) int64."""
    rng = np.random.default_rng(seed)
    size, order = chain.size, chain.order
    context = int(rng.choice(chain.num_contexts, p=pi))
    first = [(context // size ** (order - 1 - j)) % size for j in range(order)]
    cumulative = np.cumsum(chain.probs, axis=1)
    cumulative[:, -1] = 1.0  # a draw in [0, 1) always lands in a row
    rows = cumulative.tolist()
    draws = rng.random(length).tolist()
    ids = first[:length] + [0] * max(0, length - order)
    keep = size ** (order - 1)
    for i in range(order, length):
        y = bisect_right(rows[context], draws[i])
        ids[i] = y
        context = (context % keep) * size + y
    return np.asarray(ids, dtype=np.int64)


def decode(chain: MarkovChain, ids: np.ndarray) -> str:
    table = np.frombuffer(chain.alphabet.encode("ascii"), dtype=np.uint8)
    return table[ids].tobytes().decode("ascii")


def encode(chain: MarkovChain, text: str) -> np.ndarray:
    """Character ids of ``text`` (``ValueError`` for a character outside the alphabet)."""
    outside = set(text) - set(chain.alphabet)
    if outside:
        raise ValueError(f"characters outside the alphabet: {sorted(outside)}")
    table = np.zeros(128, dtype=np.int64)
    table[np.frombuffer(chain.alphabet.encode("ascii"), dtype=np.uint8)] = np.arange(chain.size)
    return table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def context_ids(ids: np.ndarray, order: int, size: int) -> np.ndarray:
    """The context before each of positions ``order ..``: (len(ids) - order,) int64."""
    n = len(ids) - order
    contexts = np.zeros(max(n, 0), dtype=np.int64)
    for j in range(order):
        contexts = contexts * size + ids[j : j + n]
    return contexts


def oracle_log_losses(chain: MarkovChain, ids: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """Each character's ``-log2 P(x_i | x_<i)`` under the stationary chain: (len(ids),).

    The first ``order`` characters are scored by ``pi``'s marginals over their prefixes, so the
    sum is the text's exact log-probability, as ``charlm-eval`` scores every character.
    """
    size, order = chain.size, chain.order
    losses = np.empty(len(ids), dtype=np.float64)
    prefix, before = 0, 1.0
    for j in range(min(order, len(ids))):
        prefix = prefix * size + int(ids[j])
        marginal = pi.reshape(size ** (j + 1), -1).sum(axis=1)[prefix]
        losses[j] = -np.log2(marginal / before)
        before = marginal
    contexts = context_ids(ids, order, size)
    losses[order:] = -np.log2(chain.probs[contexts, ids[order:]])
    return losses


@dataclass(frozen=True)
class CountModel:
    """Add-``delta`` estimate of a chain of ``order``: ``(n(c, y) + delta) / (n(c) + A delta)``."""

    order: int
    counts: np.ndarray  # (A**order, A) transitions counted in the training text
    delta: float

    def log_losses(self, ids: np.ndarray) -> np.ndarray:
        """Each character's loss in bits (the first ``order``, without a context, log2 A each)."""
        size = self.counts.shape[1]
        contexts = context_ids(ids, self.order, size)
        seen = self.counts[contexts, ids[self.order :]]
        totals = self.counts.sum(axis=1)[contexts]
        losses = np.full(len(ids), np.log2(size))
        losses[self.order :] = -np.log2((seen + self.delta) / (totals + size * self.delta))
        return losses


def count_transitions(ids: np.ndarray, order: int, size: int) -> np.ndarray:
    """``counts[c, y]``: how often ``y`` follows context ``c`` in ``ids``: (A**order, A)."""
    cells = context_ids(ids, order, size) * size + ids[order:]
    return np.bincount(cells, minlength=size ** (order + 1)).reshape(-1, size).astype(np.float64)


#: the smoothing constants ``fit_count_model`` tries, 1e-3 to 10
DELTAS = np.logspace(-3, 1, 41)


def fit_count_model(
    train_ids: np.ndarray, order: int, size: int, held_out: float = 0.1
) -> CountModel:
    """Counts of the whole training text, with the ``delta`` that scores its last ``held_out``
    part best when counted on the rest (the validation text is never looked at)."""
    cut = int(len(train_ids) * (1 - held_out))
    if cut <= order or len(train_ids) - cut < 1:
        raise ValueError(f"{len(train_ids)} training characters are too few to pick delta")
    counts = count_transitions(train_ids[:cut], order, size)
    tail = train_ids[cut - order :]  # the held-out part with the context of its first character

    def held_out_bits(delta: float) -> float:
        return float(CountModel(order, counts, delta).log_losses(tail)[order:].mean())

    best = min(DELTAS, key=held_out_bits)
    return CountModel(order, count_transitions(train_ids, order, size), float(best))
