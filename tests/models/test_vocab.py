import numpy as np
import pytest

from models.vocab import BOS_ID, UNK_ID, CharVocab, VocabError, text_to_code_points


def test_round_trip_english_and_chinese() -> None:
    text = "To be, or not to be: 生存还是毁灭，这是一个问题。\n"
    vocab = CharVocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert len(vocab) == len(set(text)) + 2
    assert UNK_ID not in vocab.encode(text)


def test_unknown_characters_map_to_unk_and_are_counted() -> None:
    vocab = CharVocab.from_text("abc")
    ids = vocab.encode("abz€c")
    assert ids[2] == UNK_ID and ids[3] == UNK_ID
    assert vocab.count_unknown("abz€c") == 2
    assert vocab.decode(ids) == "abc"


def test_rare_characters_become_unknown() -> None:
    vocab = CharVocab.from_text("aaabbbc", min_count=2)
    assert "c" not in vocab and "a" in vocab
    assert vocab.encode("c") == [UNK_ID]


def test_max_size_keeps_most_frequent() -> None:
    vocab = CharVocab.from_text("aaaabbbcc d", max_size=4)
    assert vocab.chars == ["a", "b"]


def test_order_is_stable_and_json_round_trips() -> None:
    a = CharVocab.from_text("猫犬abc\n")
    b = CharVocab.from_text("\ncba犬猫")
    assert a.chars == b.chars
    restored = CharVocab.from_json(a.to_json())
    assert restored == a
    assert restored.encode("猫a") == a.encode("猫a")


def test_thousands_of_chinese_characters() -> None:
    chars = "".join(chr(0x4E00 + i) for i in range(5000))
    vocab = CharVocab.from_text(chars * 2)
    assert len(vocab) == 5002
    ids = vocab.encode_array(chars)
    assert ids.dtype == np.int32 and ids.min() >= 2
    assert vocab.decode(ids.tolist()) == chars


def test_specials_decode_to_nothing_and_bad_json_is_rejected() -> None:
    vocab = CharVocab.from_text("ab")
    assert vocab.decode([BOS_ID, UNK_ID, vocab.id_of("a")]) == "a"
    with pytest.raises(VocabError):
        CharVocab.from_json('{"chars": "ab"}')
    with pytest.raises(VocabError):
        CharVocab.from_json("not json")


def test_lone_surrogates_encode_as_unknown() -> None:
    vocab = CharVocab.from_text("ab")
    text = "a\ud800b"
    assert text_to_code_points(text).tolist() == [97, 0xD800, 98]
    assert vocab.encode(text)[1] == UNK_ID
