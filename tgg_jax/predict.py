"""Answering questions about images with a checkpoint, and `tgg-predict` for one question.

    tgg-predict --checkpoint CKPT --image IMG --prompt "Output the coordinate of the red circle." \\
                [--object x1,y1,x2,y2 ...] [--out boxes.png]

prints the model's answer and, with --out, draws on the image every box the answer contains
(red) and the given object boxes (green). The prompt holds one `<object>` per --object (pixel
boxes in the image as stored on disk, EXIF orientation applied); `<image>` is added by the
chat template. `load_model`, `checkpoint_tokenizer` and `Answerer` also serve `tgg-eval`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from tgg_jax import checkpoint as ckpt_lib
from tgg_jax.data.pipeline import ExampleSpec
from tgg_jax.data.tokenizer import OBJECT_TOKEN, TggTokenizer, load_tokenizer, tokenizer_dir_beside
from tgg_jax.inference import answer, prompt_inputs
from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT, with_dtype
from tgg_jax.sharding import state_shardings


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
    overrides the compute dtype; "" keeps the saved one."""
    path = ckpt_lib.latest_if_run(checkpoint)
    config = ckpt_lib.load_config(path)
    if dtype:
        config = with_dtype(config, dtype)
    model = nnx.eval_shape(lambda: TinyGroundingGPT(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    shardings = None if mesh is None else state_shardings(state, mesh).to_pure_dict()
    params, _ = ckpt_lib.load_params(path, shardings=shardings)
    if mesh is None:
        params = jax.device_put(params)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    return model, config


def example_spec(config: TGGConfig, max_objects: int, object_margin: float = 0.1) -> ExampleSpec:
    """What a question's inputs look like for this model (prompts are never truncated)."""
    return ExampleSpec(image_size=config.image_size, image_tokens=config.image_tokens,
                       object_tokens=config.object_tokens, max_length=config.llm.max_position_embeddings,
                       max_objects=max_objects, object_margin=object_margin)


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


def parse_object(text: str) -> tuple[float, float, float, float]:
    """"x1,y1,x2,y2" (pixels) -> a box, or a ValueError saying what is wrong."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"--object {text!r}: expected four numbers x1,y1,x2,y2 in pixels")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise ValueError(f"--object {text!r}: x2 must exceed x1 and y2 must exceed y1")
    return values


def check_objects(prompt: str, objects: Sequence[Sequence[float]]) -> None:
    count = prompt.count(OBJECT_TOKEN)
    if count != len(objects):
        raise ValueError(f"the prompt has {count} {OBJECT_TOKEN} but {len(objects)} --object boxes "
                         f"were given; use one {OBJECT_TOKEN} per --object")


def predict(model: TinyGroundingGPT, config: TGGConfig, tokenizer: TggTokenizer, image: bytes,
            prompt: str, objects: Sequence[Sequence[float]] = (), *, max_new_tokens: int = 128,
            object_margin: float = 0.1) -> str:
    """The greedy answer to one prompt about one encoded image (objects: pixel boxes, one per
    `<object>` in the prompt)."""
    check_objects(prompt, objects)
    spec = example_spec(config, len(objects), object_margin)
    answerer = Answerer(model, tokenizer, spec, batch_size=1, max_new_tokens=max_new_tokens,
                        pad_to_multiple=1)
    boxes = np.asarray(objects, np.float32).reshape(-1, 4)
    return answerer([Question([{"from": "human", "value": prompt}], image, boxes, "prompt")])[0]


def draw_answer(image, answer_text: str, objects: Sequence[Sequence[float]], title: str,
                path: str) -> list[tuple[float, float, float, float]]:
    """Save `image` (PIL, as the model saw it) with the answer's boxes in red and the object boxes
    in green; returns the answer's boxes in pixels."""
    from tgg_jax.data import coords
    from tgg_jax.visualize import draw_boxes
    boxes = [coords.square_to_pixel(b, image.width, image.height)
             for b in coords.parse_boxes(answer_text)]
    for obj in objects:  # draw_boxes has one green box per call
        image = draw_boxes(image, true_box=obj, scale=1)
    draw_boxes(image, boxes=boxes, title=title, path=path)
    return boxes


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(prog="tgg-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="parameter checkpoint directory")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--prompt", required=True, help="the question; one <object> per --object")
    parser.add_argument("--object", action="append", default=[], metavar="x1,y1,x2,y2",
                        help="object box in pixels (repeatable, in <object> order)")
    parser.add_argument("--out", help="write the image with the boxes drawn here (PNG)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: found beside the checkpoint)")
    parser.add_argument("--max_new_tokens", type=int, default=128, help="longest answer in tokens")
    parser.add_argument("--dtype", default="", help="compute dtype override (bfloat16 / float32)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from tgg_jax.data.preprocess import load_image
    try:
        objects = [parse_object(o) for o in args.object]
        check_objects(args.prompt, objects)  # before minutes of loading
        if not os.path.isfile(args.image):
            raise FileNotFoundError(f"--image {args.image}: no such file")
        with open(args.image, "rb") as f:
            image_bytes = f.read()
        image = load_image(image_bytes, source=args.image)  # fails early, naming the file
        tokenizer = checkpoint_tokenizer(args.checkpoint, args.tokenizer)
        model, config = load_model(args.checkpoint, dtype=args.dtype)
        text = predict(model, config, tokenizer, image_bytes, args.prompt, objects,
                       max_new_tokens=args.max_new_tokens)
    except (OSError, ValueError) as e:
        sys.exit(f"tgg-predict: error: {e}")
    print(text)
    if args.out:
        draw_answer(image, text, objects, f"{args.prompt}\n-> {text}", args.out)
        print(f"wrote {args.out}", file=sys.stderr)


def run() -> None:
    main(sys.argv[1:])


if __name__ == "__main__":
    run()
