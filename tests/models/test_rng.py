"""The counter-based generator: tensor and plain-integer versions agree, and it looks uniform."""

from __future__ import annotations

import math

import torch

from models.rng import uniform_at, uniforms
from models.sampling import MAX_SEED


def test_tensor_hash_matches_the_integer_reference_bit_for_bit() -> None:
    seeds = [0, 1, 2, 12345, 2**31 - 1, 2**40 + 7, MAX_SEED - 1, MAX_SEED]
    positions = [0, 1, 2, 999, 2**20, 2**33 + 5]
    grid = uniforms(torch.tensor(seeds).unsqueeze(1), torch.tensor(positions).unsqueeze(0))
    assert grid.shape == (len(seeds), len(positions))
    assert grid.dtype == torch.float64
    for i, seed in enumerate(seeds):
        for j, position in enumerate(positions):
            assert grid[i, j].item() == uniform_at(seed, position)


def test_numbers_depend_only_on_seed_and_position() -> None:
    alone = uniforms(torch.tensor([7]), torch.tensor([41]))
    crowd_seeds = torch.tensor([3, 7, 7, 99])
    crowd_positions = torch.tensor([41, 41, 0, 41])
    crowd = uniforms(crowd_seeds, crowd_positions)
    assert crowd[1].item() == alone.item()
    assert crowd[0].item() != crowd[1].item()
    assert crowd[2].item() != crowd[1].item()


def test_numbers_are_in_range_and_roughly_uniform() -> None:
    n = 200_000
    values = uniforms(torch.full((n,), 2024), torch.arange(n))
    assert float(values.min()) >= 0.0
    assert float(values.max()) < 1.0
    # mean and variance of U(0, 1) within 5 standard errors
    assert abs(float(values.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(values.var()) - 1 / 12) < 0.002
    # ten equal bins hold ten equal shares (chi-square, 9 degrees of freedom, far tail)
    counts = torch.histc(values.float(), bins=10, min=0.0, max=1.0)
    expected = n / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40.0
    # neighbouring seeds give unrelated streams
    other = uniforms(torch.full((n,), 2025), torch.arange(n))
    corr = torch.corrcoef(torch.stack([values, other]))[0, 1]
    assert abs(float(corr)) < 0.02
