"""Answering questions about images with a checkpoint: loading the model and its tokenizer,
prompt encoding, image/object preparation, batched greedy generation and decoding. Shared by
`tgg-eval`, `tgg-predict`, the notebooks, the data engine's REC detector and the tiny model's
final evaluation."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from tgg_jax import checkpoint as ckpt_lib
from tgg_jax.data.example_spec import ExampleSpec, for_model
from tgg_jax.data.preprocess import crop_object, load_image, preprocess_image
from tgg_jax.data.template import encode_prompt
from tgg_jax.data.tokenizer import TggTokenizer, load_tokenizer, tokenizer_dir_beside
from tgg_jax.generate import SamplingConfig, generate, left_pad, strip
from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT, scanned_parts, with_dtype
from tgg_jax.sharding import state_shardings
from tgg_jax.spec import OBJECT_MARGIN, OBJECT_TOKEN


class Question(NamedTuple):
    """One question about one image: turns end with the human turn to answer; `boxes` [N, 4] are
    original-pixel object boxes, one per `<object>` in the turns; `image` is encoded bytes."""
    turns: list[dict]
    image: bytes
    boxes: np.ndarray
    record_id: str = ""


def checkpoint_tokenizer(checkpoint: str, tokenizer_dir: str | None = None) -> TggTokenizer:
    """The tokenizer a checkpoint was trained with: `tokenizer_dir` if given, else the first
    directory holding tokenizer.json among CKPT, CKPT/tokenizer and the trainer's
    WORKDIR/tokenizer (CKPT/../tokenizer, CKPT/../../tokenizer for checkpoints/<step>/)."""
    if tokenizer_dir:
        return load_tokenizer(os.path.expanduser(tokenizer_dir))
    try:
        return load_tokenizer(tokenizer_dir_beside(checkpoint))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; pass --tokenizer DIR") from None


def load_model(checkpoint: str, *, mesh: jax.sharding.Mesh | None = None,
               dtype: str = "") -> tuple[TinyGroundingGPT, TGGConfig]:
    """The model of a parameter checkpoint (CKPT/params + tgg_config.json, a trainer's
    checkpoints/<step>/, or its checkpoints/ for the latest step), its parameters on `mesh` by
    the logical-axis rules (else on the default device). `dtype` ("bfloat16" / "float32")
    overrides the compute dtype; "" keeps the saved one. The LLM's layers come one by one
    whatever the checkpoint stores: decoding runs them so, each with its own KV buffers."""
    path = ckpt_lib.latest_if_run(checkpoint)
    config = ckpt_lib.load_config(path)
    config = config.replace(llm=dataclasses.replace(config.llm, scan_layers=False))
    if dtype:
        config = with_dtype(config, dtype)
    model = nnx.eval_shape(lambda: TinyGroundingGPT(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    shardings = None if mesh is None else state_shardings(state, mesh).to_pure_dict()
    params, _ = ckpt_lib.load_params(path, shardings=shardings, scanned=scanned_parts(config))
    if mesh is None:
        params = jax.device_put(params)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    return model, config




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


class Answerer:
    """Greedy answers to batches of questions with fixed shapes: `batch_size` rows (short batches
    are padded with copies) and prompts left-padded to a multiple of `pad_to_multiple`, so one
    compiled program serves every batch and an answer does not depend on its batch neighbours."""

    def __init__(self, model: TinyGroundingGPT, tokenizer: TggTokenizer, spec: ExampleSpec, *,
                 batch_size: int, max_new_tokens: int, pad_to_multiple: int = 64,
                 mesh: jax.sharding.Mesh | None = None):
        self.model, self.tokenizer, self.spec, self.mesh = model, tokenizer, spec, mesh
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.pad_to_multiple = pad_to_multiple

    def __call__(self, questions: Sequence[Question]) -> list[str]:
        items = [prompt_inputs(q.turns, q.image, np.asarray(q.boxes, np.float32).reshape(-1, 4),
                               self.tokenizer, self.spec, q.record_id) for q in questions]
        longest = max(len(it["prompt"]) for it in items)
        length = math.ceil(longest / self.pad_to_multiple) * self.pad_to_multiple
        if self.mesh is None:
            return self._answer(items, length)
        with jax.set_mesh(self.mesh):
            return self._answer(items, length)

    def _answer(self, items: list[dict], length: int) -> list[str]:
        return answer(self.model, items, self.tokenizer, max_new_tokens=self.max_new_tokens,
                      batch_size=self.batch_size, length=length)


def check_objects(prompt: str, objects: Sequence[Sequence[float]]) -> None:
    count = prompt.count(OBJECT_TOKEN)
    if count != len(objects):
        raise ValueError(f"the prompt has {count} {OBJECT_TOKEN} but {len(objects)} --object boxes "
                         f"were given; use one {OBJECT_TOKEN} per --object")


def predict(model: TinyGroundingGPT, config: TGGConfig, tokenizer: TggTokenizer, image: bytes,
            prompt: str, objects: Sequence[Sequence[float]] = (), *, max_new_tokens: int = 128,
            object_margin: float = OBJECT_MARGIN) -> str:
    """The greedy answer to one prompt about one encoded image (objects: pixel boxes, one per
    `<object>` in the prompt)."""
    check_objects(prompt, objects)
    spec = for_model(config, max_objects=len(objects), object_margin=object_margin)
    answerer = Answerer(model, tokenizer, spec, batch_size=1, max_new_tokens=max_new_tokens,
                        pad_to_multiple=1)
    boxes = np.asarray(objects, np.float32).reshape(-1, 4)
    return answerer([Question([{"from": "human", "value": prompt}], image, boxes, "prompt")])[0]
