"""Counter-based random numbers: a row's ``i``-th uniform is a hash of its seed and ``i``.

A decode batch draws one uniform per row per character. With a generator object per row that is
a Python call per row per step; with a counter-based generator it is one tensor expression for
the whole batch: ``uniforms(seeds, positions)`` with ``seeds`` and ``positions`` (B,) int64. The
numbers depend on nothing but the seed and the position, so a request gets the same text alone or
beside any number of others, on any device.

The hash is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014): the state ``seed + (position + 1) * gamma`` mixed by two xor-shift-multiply rounds.
int64 arithmetic wraps modulo 2**64 (two's complement), and logical right shifts are written as an
arithmetic shift and a mask, so the tensor version matches the plain-integer reference
``uniform_at`` bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA_S = _signed(_GAMMA)
_MIX1_S = _signed(_MIX1)
_MIX2_S = _signed(_MIX2)


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniforms(seeds: Tensor, positions: Tensor) -> Tensor:
    """Uniform numbers in [0, 1) (float64, shape of the broadcast inputs) for int64 tensors.

    ``seeds`` and ``positions`` broadcast against each other: (B,) and (B,) give one number per
    row; (B, 1) and (1, T) give each row's next ``T`` numbers.
    """
    z = seeds.to(torch.int64) + (positions.to(torch.int64) + 1) * _GAMMA_S
    z = (z ^ _shr(z, 30)) * _MIX1_S
    z = (z ^ _shr(z, 27)) * _MIX2_S
    z = z ^ _shr(z, 31)
    # the top 53 bits as a double in [0, 1)
    return _shr(z, 11).to(torch.float64) * (2.0**-53)


def uniform_at(seed: int, position: int) -> float:
    """The same number as ``uniforms`` for one seed and position, in plain integers."""
    z = (seed + (position + 1) * _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    z ^= z >> 31
    return (z >> 11) * 2.0**-53
