"""Qwen2.5 ChatML conversation template with loss mask and placeholder runs (SPEC §1, §2):

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
    <|im_start|>user\n<image>\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n   (per turn)

Marker and placeholder ids are inserted directly; only text is tokenized, each piece on its own
(role header, each stretch of text between placeholders, the answer), so a prompt for generation
is token for token the prefix the model saw in training. `<image>` / `<object>` in a human value
become runs of `image_tokens` / `object_tokens` copies of their ids.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from tgg_jax.data.tokenizer import TggTokenizer
from tgg_jax.spec import IMAGE_TOKEN, OBJECT_TOKEN, SYSTEM_PROMPT

HUMAN, GPT = "human", "gpt"
_PLACEHOLDER = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(OBJECT_TOKEN)})")


class TemplateError(ValueError):
    """A record the template cannot encode (malformed, placeholder mismatch, too long)."""


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """input_ids: int32 [T]; loss_mask: bool [T], True on assistant content and its <|im_end|>;
    num_turns_kept: (human, gpt) pairs left after truncation; num_objects_kept: `<object>` runs
    left (the first ones in order of appearance)."""
    input_ids: np.ndarray
    loss_mask: np.ndarray
    num_turns_kept: int
    num_objects_kept: int


def _check_turns(conversations: Sequence[dict], record_id: str, *, last: str) -> None:
    """Turns alternate human, gpt, ... starting with human and ending with `last`."""
    if not conversations:
        raise TemplateError(f"record {record_id!r}: empty conversation")
    for i, turn in enumerate(conversations):
        expected = HUMAN if i % 2 == 0 else GPT
        if not isinstance(turn, dict) or turn.get("from") != expected \
                or not isinstance(turn.get("value"), str):
            raise TemplateError(f"record {record_id!r}: turn {i} must be "
                                f"{{'from': {expected!r}, 'value': str}}, got {turn!r}")
        if expected == GPT and _PLACEHOLDER.search(turn["value"]):
            raise TemplateError(f"record {record_id!r}: turn {i} (gpt) contains a placeholder")
    if conversations[-1]["from"] != last:
        raise TemplateError(f"record {record_id!r}: conversation must end with a {last} turn")


def _human_values(conversations: Sequence[dict], num_images: int, num_objects: int,
                  record_id: str) -> list[str]:
    """Human texts with the image placeholder(s) moved to the start of the first one (LLaVA's
    convention; added when the record has one image but no `<image>`); counts checked."""
    values = [turn["value"] for turn in conversations[::2]]
    images = [v.count(IMAGE_TOKEN) for v in values]
    if num_images == 1 and sum(images) == 0:
        images[0] = 1
    if sum(images[1:]):
        raise TemplateError(f"record {record_id!r}: {IMAGE_TOKEN} only allowed in the first "
                            f"human turn")
    if images[0] != num_images:
        raise TemplateError(f"record {record_id!r}: {images[0]} {IMAGE_TOKEN} placeholders for "
                            f"{num_images} images")
    objects = sum(v.count(OBJECT_TOKEN) for v in values)
    if objects != num_objects:
        raise TemplateError(f"record {record_id!r}: {objects} {OBJECT_TOKEN} placeholders for "
                            f"{num_objects} objects")
    if num_images:
        values[0] = f"{IMAGE_TOKEN}\n" * num_images + values[0].replace(IMAGE_TOKEN, "").strip()
    return values


class _Renderer:
    """Token pieces of the template for one tokenizer and placeholder lengths."""

    def __init__(self, tokenizer: TggTokenizer, image_tokens: int, object_tokens: int):
        self.tok = tokenizer
        self.runs = {IMAGE_TOKEN: [tokenizer.image_id] * image_tokens,
                     OBJECT_TOKEN: [tokenizer.object_id] * object_tokens}
        self.newline = tokenizer.encode("\n")

    def header(self, role: str) -> list[int]:
        """<|im_start|>{role}\\n"""
        return [self.tok.im_start_id] + self.tok.encode(f"{role}\n")

    def footer(self) -> list[int]:
        """<|im_end|>\\n"""
        return [self.tok.im_end_id] + self.newline

    def content(self, text: str) -> list[int]:
        """Text with each placeholder replaced by its run of ids."""
        ids = []
        for piece in _PLACEHOLDER.split(text):
            ids += self.runs[piece] if piece in self.runs else self.tok.encode(piece)
        return ids

    def system(self) -> list[int]:
        return self.header("system") + self.content(SYSTEM_PROMPT) + self.footer()

    def user(self, text: str) -> list[int]:
        return self.header("user") + self.content(text) + self.footer()

    def assistant(self, text: str) -> tuple[list[int], list[bool]]:
        """(ids, loss mask): the loss covers the answer and its <|im_end|>, not the header/\\n."""
        head, answer = self.header("assistant"), self.tok.encode(text) + [self.tok.im_end_id]
        ids = head + answer + self.newline
        return ids, [False] * len(head) + [True] * len(answer) + [False] * len(self.newline)


def encode_conversation(conversations: Sequence[dict], tokenizer: TggTokenizer, *,
                        num_images: int, num_objects: int, image_tokens: int = 576,
                        object_tokens: int = 576, max_length: int = 2048,
                        record_id: str = "") -> EncodedExample:
    """LLaVA-style turns [{from: human|gpt, value}, ...] -> ids and loss mask (training).

    Trailing (human, gpt) pairs that do not fit in `max_length` are dropped whole, with the
    objects they reference; a record whose first pair does not fit raises TemplateError.
    """
    _check_turns(conversations, record_id, last=GPT)
    humans = _human_values(conversations, num_images, num_objects, record_id)
    render = _Renderer(tokenizer, image_tokens, object_tokens)
    ids = render.system()
    mask = [False] * len(ids)
    turns_kept = objects_kept = 0
    for human, gpt in zip(humans, conversations[1::2]):
        user_ids = render.user(human)
        answer_ids, answer_mask = render.assistant(gpt["value"])
        if len(ids) + len(user_ids) + len(answer_ids) > max_length:
            break
        ids += user_ids + answer_ids
        mask += [False] * len(user_ids) + answer_mask
        turns_kept += 1
        objects_kept += human.count(OBJECT_TOKEN)
    if turns_kept == 0:
        raise TemplateError(f"record {record_id!r}: first turn alone exceeds max_length "
                            f"{max_length} tokens")
    return EncodedExample(np.asarray(ids, np.int32), np.asarray(mask, np.bool_),
                          turns_kept, objects_kept)


def encode_prompt(conversations: Sequence[dict], tokenizer: TggTokenizer, *, num_images: int,
                  num_objects: int, image_tokens: int = 576, object_tokens: int = 576,
                  record_id: str = "") -> np.ndarray:
    """Turns ending with a human question -> int32 [T] ids ending in "<|im_start|>assistant\\n",
    ready for generation (no truncation, no labels)."""
    _check_turns(conversations, record_id, last=HUMAN)
    humans = _human_values(conversations, num_images, num_objects, record_id)
    render = _Renderer(tokenizer, image_tokens, object_tokens)
    ids = render.system()
    for i, human in enumerate(humans):
        ids += render.user(human)
        if 2 * i + 1 < len(conversations):
            ids += render.assistant(conversations[2 * i + 1]["value"])[0]
    ids += render.header("assistant")
    return np.asarray(ids, np.int32)
