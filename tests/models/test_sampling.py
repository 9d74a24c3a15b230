import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from models.rng import uniforms as rng_uniforms
from models.sampling import (
    MAX_SEED,
    RowSettings,
    SamplingParams,
    StopMatcher,
    apply_temperature,
    choose_next,
    choose_next_rows,
    draw,
    generate,
    random_seed,
    top_k_filter,
    top_p_filter,
)
from models.vocab import BOS_ID, NUM_SPECIAL, UNK_ID, CharVocab


def test_top_k_keeps_k_per_row() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    out = top_k_filter(logits, torch.tensor([2, 0]))
    assert torch.isinf(out[0]).tolist() == [True, False, False, True]
    assert not torch.isinf(out[1]).any()


def test_top_p_keeps_smallest_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = top_p_filter(probs.log(), torch.tensor([0.8]))
    assert torch.isinf(out[0]).tolist() == [False, False, True, True]
    out = top_p_filter(probs.log(), torch.tensor([0.1]))
    assert torch.isinf(out[0]).tolist() == [False, True, True, True]


def test_draw_follows_cdf() -> None:
    probs = torch.tensor([[0.2, 0.5, 0.3]] * 3)
    assert draw(probs, torch.tensor([0.1, 0.5, 0.95])).tolist() == [0, 1, 2]


def test_draw_never_picks_a_character_of_zero_probability() -> None:
    """Uniforms just below 1 (float64) pick the last character that has any probability, never a
    filtered one after it, and never run past the vocabulary."""
    probs = torch.tensor([[0.25, 0.75, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    below_one = torch.tensor([1.0 - 2.0**-53] * 2, dtype=torch.float64)
    assert draw(probs, below_one).tolist() == [1, 3]
    assert draw(probs, torch.zeros(2, dtype=torch.float64)).tolist() == [0, 0]


def test_greedy_is_argmax_and_specials_are_never_chosen() -> None:
    logits = torch.tensor([[9.0, 9.0, 1.0, 3.0, 2.0]])
    greedy = choose_next(logits, [SamplingParams(temperature=0)], torch.zeros(1))
    assert greedy.item() == 3
    hot = [SamplingParams(temperature=5.0)] * 200
    picks = choose_next(
        logits.expand(200, -1), hot, rng_uniforms(torch.tensor(7), torch.arange(200))
    )
    assert set(picks.tolist()) == {2, 3, 4}
    assert UNK_ID not in picks and BOS_ID not in picks


def every_step(
    logits: torch.Tensor, params: list[SamplingParams], uniforms: torch.Tensor
) -> torch.Tensor:
    """``choose_next`` with no step skipped: every filter, the division, argmax and ``where``."""
    logits = logits[:, NUM_SPECIAL:].float()
    temperature = torch.tensor([p.temperature for p in params])
    scaled = apply_temperature(logits, temperature)
    scaled = top_k_filter(scaled, torch.tensor([p.top_k for p in params]))
    scaled = top_p_filter(scaled, torch.tensor([p.top_p for p in params]))
    sampled = draw(scaled.softmax(dim=-1), uniforms)
    return torch.where(temperature > 0, sampled, logits.argmax(dim=-1)) + NUM_SPECIAL


@pytest.mark.parametrize(
    "params",
    [
        [SamplingParams()] * 3,  # temperature 1 everywhere: no division
        [SamplingParams(temperature=0.0)] * 2,  # all greedy
        [SamplingParams(), SamplingParams(temperature=0.0), SamplingParams(temperature=0.7)],
        [SamplingParams(top_k=3), SamplingParams(top_p=0.8), SamplingParams(temperature=1.4)],
    ],
)
def test_skipped_steps_change_no_choice(params: list[SamplingParams]) -> None:
    """Skipping what would change nothing gives the same ids as taking every step, with the
    settings built per call or once for many steps."""
    torch.manual_seed(3)
    settings = RowSettings.of(params, torch.device("cpu"))
    for step in range(300):
        logits = torch.randn(len(params), 67) * 3
        uniforms = rng_uniforms(torch.arange(len(params)), torch.tensor(step))
        expected = every_step(logits, params, uniforms)
        assert torch.equal(choose_next(logits, params, uniforms), expected)
        assert torch.equal(choose_next_rows(logits, settings, uniforms), expected)


def test_row_settings_follow_rows_that_join_and_leave() -> None:
    """``cat`` and ``select`` give the settings ``of`` would build for the new rows, flags
    included."""
    cpu = torch.device("cpu")
    first = [SamplingParams(), SamplingParams(temperature=0.0)]
    second = [SamplingParams(top_k=3), SamplingParams(temperature=0.5, top_p=0.9)]
    joined = RowSettings.of(first, cpu).cat(RowSettings.of(second, cpu))
    for rows in ([0, 1, 2, 3], [1], [0], [3, 0], [2, 1]):
        got = joined.select(torch.tensor(rows))
        want = RowSettings.of([(first + second)[i] for i in rows], cpu)
        assert len(got) == len(rows)
        for name in ("temperature", "top_k", "top_p"):
            assert torch.equal(getattr(got, name), getattr(want, name))
        for name in ("all_greedy", "any_greedy", "unit_temperature", "any_top_k", "any_top_p"):
            assert getattr(got, name) == getattr(want, name), (rows, name)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_stop_matcher_finds_first() -> None:
    m = StopMatcher(["\n\n", "END"])
    assert m.find("abc") is None
    assert m.find("abc\n\n") == 3
    assert m.find("xEN") is None and m.find("xEND") == 1


def test_stop_matcher_first_is_the_first_to_complete() -> None:
    """Over a text read at once, the stop string found is the one a character-by-character check
    would have found: the first to end, and of those ending together, the longest."""
    m = StopMatcher(["abcd", "bc"])
    assert m.find("xabcd") == 2  # "bc" was complete before "abcd"
    assert StopMatcher(["bc", "abc"]).find("xabc") == 1
    assert StopMatcher(["cd", "ab"]).find("abcd") == 0
    # only where a stop string could end among the new characters is searched
    assert m.find("bcxxxx", new_chars=1) is None and m.find("bcxxxx") == 0
    for text in ["xxabcdbc", "abababcd", "bbbbc", "abcabcd", "aabcd", "ab"]:
        by_char = next((m.find(text[:i], new_chars=1) for i in range(1, len(text) + 1)
                        if m.find(text[:i], new_chars=1) is not None), None)  # fmt: skip
        assert m.find(text) == by_char, text


def test_stop_matcher_holds_what_could_begin_a_stop() -> None:
    m = StopMatcher(["abc", "bd"])
    assert [m.held(t) for t in ["", "x", "xa", "xab", "xb", "abx", "ab"]] == [0, 0, 1, 2, 1, 0, 2]
    assert StopMatcher([]).held("abc") == 0


def model_and_vocab():
    vocab = CharVocab.from_text("abcdef \n")
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(arch="gru", vocab_size=len(vocab), embed_size=4, hidden_size=8, num_layers=1)
    ).eval()
    return model, vocab


def test_same_seed_same_text_and_greedy_path() -> None:
    model, vocab = model_and_vocab()
    params = SamplingParams(temperature=1.0, top_k=4)
    a = generate(model, vocab, "ab", 40, params, seed=42, n=2)
    b = generate(model, vocab, "ab", 40, params, seed=42, n=2)
    assert [g.text for g in a] == [g.text for g in b]
    assert len(a[0].text) == 40 and a[0].finish_reason == "length"
    greedy = generate(model, vocab, "ab", 10, SamplingParams(temperature=0))[0]
    text = "ab"
    for _ in range(10):  # recompute the argmax path from scratch at each step
        ids = torch.tensor([[BOS_ID, *vocab.encode(text)]])
        with torch.no_grad():
            logits, _ = model(ids)
        logits = logits[0, -1].clone()
        logits[[UNK_ID, BOS_ID]] = float("-inf")
        text += vocab.token(int(logits.argmax()))
    assert greedy.text == text[2:]


def test_generation_draws_the_counter_based_numbers() -> None:
    """Character ``j`` of completion ``i`` is drawn with ``uniforms(seed + i, j)``: the same draws
    made by hand give the same ids."""
    model, vocab = model_and_vocab()
    params = SamplingParams(temperature=1.3, top_k=5)
    outs = generate(model, vocab, "ab", 30, params, seed=77, n=2)
    for i, out in enumerate(outs):
        assert out.seed == 77 + i
        state = None
        with torch.no_grad():
            logits, state = model(torch.tensor([[BOS_ID, *vocab.encode("ab")]]))
            for j in range(30):
                u = rng_uniforms(torch.tensor([77 + i]), torch.tensor([j]))
                idx = choose_next(logits[:, -1], [params], u)
                assert idx.item() == out.ids[j], (i, j)
                logits, state = model(idx.unsqueeze(-1), state)
    assert outs[0].text != outs[1].text


def test_seeds_are_checked_and_random_ones_leave_room() -> None:
    model, vocab = model_and_vocab()
    with pytest.raises(ValueError, match="seed"):
        generate(model, vocab, "", 3, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        generate(model, vocab, "", 3, seed=MAX_SEED, n=2)
    assert generate(model, vocab, "", 3, seed=MAX_SEED - 1, n=2)[1].seed == MAX_SEED
    assert all(0 <= random_seed(16) <= MAX_SEED - 15 for _ in range(100))


def test_stop_strings_end_generation() -> None:
    model, vocab = model_and_vocab()
    full = generate(model, vocab, "", 60, SamplingParams(), seed=5)[0].text
    stop = full[10:12]
    cut = generate(model, vocab, "", 60, SamplingParams(), seed=5, stop=[stop])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
