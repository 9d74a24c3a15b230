"""The known-entropy benchmark: exact entropy rates, the oracle and count model, the texts, and
``bench.markov --smoke`` end to end (charlm-train and charlm-eval as processes)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import markov
from bench import markov_chain as mc


def h2(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@pytest.mark.parametrize(("order", "size"), [(1, 4), (2, 7), (3, 5)])
def test_uniform_rows_have_the_entropy_log2_of_the_alphabet(order: int, size: int) -> None:
    chain = mc.MarkovChain(mc.CHARACTERS[:size], order, np.full((size**order, size), 1 / size))
    stationary = mc.stationary_distribution(chain)
    assert stationary.probs == pytest.approx(np.full(size**order, 1 / size**order))
    assert mc.entropy_rate(chain) == pytest.approx(math.log2(size), abs=1e-12)


def test_two_state_chain_matches_the_closed_form() -> None:
    a, b = 0.1, 0.3  # P(0 -> 1) and P(1 -> 0)
    chain = mc.MarkovChain("xy", 1, np.array([[1 - a, a], [b, 1 - b]]))
    # balance: pi0 a = pi1 b, so pi = (b, a) / (a + b) = (0.75, 0.25)
    pi = mc.stationary_distribution(chain).probs
    assert pi == pytest.approx([0.75, 0.25], abs=1e-12)
    assert mc.entropy_rate(chain) == pytest.approx(0.75 * h2(a) + 0.25 * h2(b), abs=1e-12)


def test_the_stationary_distribution_of_a_random_chain_is_a_fixed_point() -> None:
    chain = mc.random_chain(3, 6, seed=1)
    stationary = mc.stationary_distribution(chain)
    pi = stationary.probs
    assert pi.sum() == pytest.approx(1.0) and (pi > 0).all()
    assert np.abs(mc.step_contexts(chain, pi) - pi).sum() < 1e-11
    # not the uniform distribution: the check above is not passed by the starting point
    assert np.abs(pi - 1 / pi.size).sum() > 0.1
    assert 0 < mc.entropy_rate(chain, pi) < math.log2(6)


def test_the_oracle_scores_are_a_distribution_over_texts() -> None:
    """Summed over every text of length 4, the oracle's probabilities add up to 1: the first
    characters' prefix marginals and the later conditionals are the chain's chain rule."""
    chain = mc.random_chain(2, 3, seed=2)
    pi = mc.stationary_distribution(chain).probs
    texts = np.array(list(itertools.product(range(3), repeat=4)))
    total = sum(2.0 ** -mc.oracle_log_losses(chain, ids, pi).sum() for ids in texts)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_the_oracle_log_loss_on_a_long_sample_converges_to_the_entropy() -> None:
    chain = mc.random_chain(2, 6, seed=3)
    pi = mc.stationary_distribution(chain).probs
    losses = mc.oracle_log_losses(chain, mc.sample_ids(chain, 400_000, 4, pi), pi)
    # standard error from the means of 200 blocks of 2,000 characters (the chain forgets its
    # state within a few characters, so the blocks are about independent)
    blocks = losses.reshape(200, -1).mean(axis=1)
    stderr = blocks.std(ddof=1) / math.sqrt(len(blocks))
    assert stderr < 0.005  # the test can tell the figures apart
    assert abs(losses.mean() - mc.entropy_rate(chain, pi)) < 5 * stderr


def test_the_count_model_of_the_right_order_gets_close_to_the_entropy() -> None:
    chain = mc.random_chain(2, 6, seed=5)
    pi = mc.stationary_distribution(chain).probs
    train = mc.sample_ids(chain, 500_000, 6, pi)
    val = mc.sample_ids(chain, 100_000, 7, pi)
    oracle = mc.oracle_log_losses(chain, val, pi).mean()
    model = mc.fit_count_model(train, 2, 6)
    bits = model.log_losses(val).mean()
    # 180 cells from 500,000 characters cost the estimate about 0.0003 bits/char
    assert -0.002 < bits - oracle < 0.005
    assert abs(bits - mc.entropy_rate(chain, pi)) < 0.02
    # the order matters: a first-order count model of the same text is far off
    lower = mc.fit_count_model(train, 1, 6).log_losses(val).mean()
    assert lower - oracle > 0.05


def test_the_texts_use_exactly_the_alphabet_and_decode_back() -> None:
    chain = mc.random_chain(1, 16, seed=8)
    ids = mc.sample_ids(chain, 50_000, 9, mc.stationary_distribution(chain).probs)
    text = mc.decode(chain, ids)
    assert len(text) == 50_000 and set(text) == set(chain.alphabet) == set("abcdefghijklmnop")
    assert np.array_equal(mc.encode(chain, text), ids)
    with pytest.raises(ValueError, match="outside the alphabet"):
        mc.encode(chain, text + "z")


def make_args(seed: int) -> argparse.Namespace:
    return argparse.Namespace(seed=seed, concentration=0.3, val_chars=3000)


def test_the_same_seed_gives_the_same_texts(tmp_path: Path) -> None:
    point = (2, 32, 20_000)
    first = markov.make_texts(point, make_args(0), tmp_path / "a")
    second = markov.make_texts(point, make_args(0), tmp_path / "b")
    other = markov.make_texts(point, make_args(1), tmp_path / "c")
    assert first == second and first != other
    for name in ("train.txt", "val.txt"):
        text = (tmp_path / "a" / name).read_text(encoding="utf-8")
        assert text == (tmp_path / "b" / name).read_text(encoding="utf-8")
        assert text != (tmp_path / "c" / name).read_text(encoding="utf-8")
        assert set(text) == set(mc.CHARACTERS[:32])
    train = (tmp_path / "a" / "train.txt").read_text(encoding="utf-8")
    assert len(train) == 20_000 and train[:3000] != (tmp_path / "a" / "val.txt").read_text()


def test_the_grid_is_parsed_and_checked() -> None:
    assert markov.parse_grid("2:32:1e6, 3:16:3e6") == [(2, 32, 1_000_000), (3, 16, 3_000_000)]
    with pytest.raises(ValueError, match="ORDER:ALPHABET:CHARS"):
        markov.parse_grid("2:32")
    with pytest.raises(ValueError, match="transition probabilities"):
        markov.parse_grid("3:64:1e6")
    with pytest.raises(ValueError, match="alphabet size"):
        markov.parse_grid("1:200:1e6")


@pytest.mark.slow  # charlm-train for 5 s and charlm-eval, as processes: about 15 s
def test_smoke_run_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert markov.main(["--smoke", "--json", str(tmp_path / "markov.json")]) == 0
    output = capsys.readouterr().out
    assert markov.TABLE_HEAD in output
    (row,) = json.loads((tmp_path / "markov.json").read_text())
    assert (row["order"], row["alphabet_size"], row["train_chars"]) == (1, 8, 20_000)
    assert row["charlm_eval"]["num_chars"] == 5000 and row["charlm_eval"]["num_unknown"] == 0
    bits = row["charlm_val_bits"]
    assert 0 < row["entropy_bits"] < 3 and math.isfinite(bits) and bits > 0
    assert row["charlm_gap"] == pytest.approx(bits - row["entropy_bits"])
    assert row["met"] == (row["charlm_gap"] <= markov.TARGET)
    assert row["charlm_last_line"].startswith("stopped (")
    line = next(x for x in output.splitlines() if x.startswith("| 1 | 8 | 20,000 |"))
    assert f"{bits:.4f} ({row['charlm_gap']:+.4f})" in line
    assert line.endswith("| met |") or line.endswith("| missed |")
