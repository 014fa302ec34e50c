"""The tiny tokenizer of the embedded CPU default: training, round trips, the chat template."""

import numpy as np
import pytest

from tgg_jax.data.template import encode_conversation
from tgg_jax.tiny.tokenizer import corpus, train_tiny_tokenizer

CORPUS = [
    "Output the coordinate of the dog on the left.",
    "The dog is at [0.123, 0.456, 0.789, 1.000].",
    "Describe the region [0.250, 0.100, 0.675, 0.900].",
    "A red car parked by the road, next to a small tree.",
    "What is the man holding? Answer the question using a single word or phrase.",
] * 20


@pytest.fixture(scope="module")
def tiny():
    return train_tiny_tokenizer(CORPUS, vocab_size=400)


def test_special_ids_and_size(tiny):
    assert (tiny.endoftext_id, tiny.im_start_id, tiny.im_end_id, tiny.image_id,
            tiny.object_id) == (0, 1, 2, 3, 4)
    assert 261 < tiny.vocab_size <= 400
    with pytest.raises(ValueError, match="at least 261"):
        train_tiny_tokenizer(CORPUS, vocab_size=100)


def test_deterministic(tiny):
    again = train_tiny_tokenizer(CORPUS, vocab_size=400)
    assert again.backend.to_str() == tiny.backend.to_str()


def test_digits_are_single_tokens(tiny):
    ids = tiny.encode("[0.123, 0.456, 0.789, 1.000] 2024")
    pieces = [tiny.decode([i]) for i in ids]
    assert "".join(pieces) == "[0.123, 0.456, 0.789, 1.000] 2024"
    assert all(len(p) == 1 for p in pieces if any(c.isdigit() for c in p))
    assert sum(p.isdigit() for p in pieces) == 20  # 4 x 4 coordinate digits + 4


@pytest.mark.parametrize("text", [CORPUS[0], CORPUS[3], "unseen: naïve café 你好 🤖\n\t  end ",
                                  "<image> and <|im_end|> typed as text", ""])
def test_round_trip(tiny, text):
    ids = tiny.encode(text)
    assert tiny.decode(ids) == text
    assert not {tiny.image_id, tiny.im_end_id, tiny.endoftext_id} & set(ids)


def test_chat_through_template(tiny):
    turns = [{"from": "human", "value": "Where is <object>?"},
             {"from": "gpt", "value": "It is at [0.1, 0.2, 0.3, 0.4]."}]
    example = encode_conversation(turns, tiny, num_images=1, num_objects=1, image_tokens=3,
                                  object_tokens=2, max_length=256)
    rendered = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n<image><image><image>\nWhere is <object><object>?<|im_end|>\n"
                "<|im_start|>assistant\nIt is at [0.1, 0.2, 0.3, 0.4].<|im_end|>\n")
    assert tiny.decode(example.input_ids, skip_special_tokens=False) == rendered
    answer = example.input_ids[example.loss_mask]
    want = "It is at [0.1, 0.2, 0.3, 0.4].<|im_end|>"
    assert tiny.decode(answer, skip_special_tokens=False) == want
    assert np.count_nonzero(example.input_ids == tiny.image_id) == 3


def test_save_loads_in_transformers(tiny, tmp_path):
    from transformers import AutoTokenizer

    tiny.save(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>",
                                     "<object>"]) == [0, 1, 2, 3, 4]
    assert hf.eos_token == "<|im_end|>" and len(hf) == tiny.vocab_size
    for text in CORPUS[:5]:
        assert hf.encode(text, add_special_tokens=False) == tiny.encode(text)


def test_corpus_holds_every_word_the_tasks_use():
    text_corpus = corpus(count=50)
    assert text_corpus == corpus(count=50)
    text = "\n".join(text_corpus)
    for word in ("small", "medium", "large", "orange", "diamond", "star", "on the left",
                 "Output the coordinate of", "Describe the region", "<object>", "Yes", "No",
                 "Is there an orange", "You are a helpful assistant."):
        assert word in text, word
    assert "an red" not in text and "a orange" not in text
