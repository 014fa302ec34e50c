"""Answering questions about images: prompt encoding, image/object preparation, batched greedy
generation and decoding. Shared by the evaluators, `tgg-predict` and the trainer's final eval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flax import nnx

from tgg_jax.data.pipeline import ExampleSpec
from tgg_jax.data.preprocess import crop_object, load_image, preprocess_image
from tgg_jax.data.template import encode_prompt
from tgg_jax.data.tokenizer import TggTokenizer
from tgg_jax.generate import SamplingConfig, generate, left_pad, strip


def prompt_inputs(turns: Sequence[dict], image: bytes | None, boxes: Sequence[Sequence[float]],
                  tokenizer: TggTokenizer, spec: ExampleSpec, record_id: str = "") -> dict:
    """One question (turns ending with a human turn) -> prompt ids and uint8 images / objects."""
    has_image = image is not None and len(image) > 0
    ids = encode_prompt(turns, tokenizer, num_images=int(has_image), num_objects=len(boxes),
                        image_tokens=spec.image_tokens, object_tokens=spec.object_tokens,
                        record_id=record_id)
    images = np.zeros((1, spec.image_size, spec.image_size, 3), np.uint8)
    objects = np.zeros((spec.max_objects, spec.image_size, spec.image_size, 3), np.uint8)
    if len(boxes) > spec.max_objects:
        raise ValueError(f"{record_id}: {len(boxes)} objects, the model was set up for {spec.max_objects}")
    if has_image:
        img = load_image(bytes(image), source=record_id)
        images[0] = preprocess_image(img, spec.image_size)
        for i, box in enumerate(boxes):
            objects[i] = preprocess_image(crop_object(img, box, spec.object_margin), spec.image_size)
    return {"prompt": ids, "images": images, "objects": objects}


def batch_inputs(items: Sequence[dict], pad_id: int, length: int | None = None) -> dict:
    batch = left_pad([it["prompt"] for it in items], pad_id, length)
    batch["images"] = np.stack([it["images"] for it in items])
    batch["objects"] = np.stack([it["objects"] for it in items])
    return batch


def answer(model: nnx.Module, items: Sequence[dict], tokenizer: TggTokenizer, *,
           max_new_tokens: int = 64, batch_size: int | None = None, length: int | None = None) -> list[str]:
    """Greedy answers for prepared items (see prompt_inputs), in order.

    Batches are padded to `batch_size` with copies of the first item so every call has one shape.
    """
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, stop_ids=(tokenizer.im_end_id, tokenizer.endoftext_id),
                              pad_id=tokenizer.endoftext_id)
    batch_size = batch_size or len(items)
    answers = []
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        real = len(chunk)
        chunk += [chunk[0]] * (batch_size - real)
        tokens = generate(model, batch_inputs(chunk, tokenizer.endoftext_id, length), sampling)
        answers += [tokenizer.decode(t) for t in strip(tokens, sampling.stop_ids)[:real]]
    return answers

