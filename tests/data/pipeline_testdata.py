"""Shared inputs of the pipeline and packing tests: a few tgg_shapes records, tagged text-only
records, a tiny tokenizer and a small ExampleSpec (28 px images, 4 / 2 placeholder tokens)."""

from __future__ import annotations

import functools
import re

import grain
import numpy as np

from tgg_jax.data import shapes
from tgg_jax.data.example_spec import ExampleSpec
from tgg_jax.tiny.tokenizer import train_tiny_tokenizer

SPEC = ExampleSpec(image_size=28, image_tokens=4, object_tokens=2, max_length=160, max_objects=3)
BUCKETS = (96, 128, 160)
# No read-ahead threads: the tests build many short-lived iterators on 2 shared cores.
READ = grain.ReadOptions(num_threads=0, prefetch_buffer_size=1)
_TAG = re.compile(r"item ([a-z]+\d+)")


@functools.cache
def shape_records(count: int = 12) -> tuple[dict, ...]:
    """tgg_shapes train records 0 .. count-1 (every task, some multi-turn)."""
    return tuple(shapes.make_record(0, "train", i, multi_turn=0.3) for i in range(count))


def text_record(tag: str) -> dict:
    """A text-only record whose question names it ("item a7"), to tell examples apart."""
    return {"id": tag, "image": b"", "width": 0, "height": 0,
            "objects": np.zeros((0, 4), np.float32),
            "conversations": [{"from": "human", "value": f"Tell me about item {tag}."},
                              {"from": "gpt", "value": "It is fine."}]}


def tag_of(tokenizer, input_ids) -> str:
    """The tag of a text_record example, read back from its tokens."""
    match = _TAG.search(tokenizer.decode(input_ids))
    assert match, tokenizer.decode(input_ids)
    return match.group(1)


@functools.cache
def tokenizer():
    texts = [t["value"] for r in shape_records() for t in r["conversations"]]
    texts += [t["value"] for r in (text_record("abc123"),) for t in r["conversations"]]
    texts += ["You are a helpful assistant.", "system\nuser\nassistant\n"]
    return train_tiny_tokenizer(texts, vocab_size=400)
