"""`tgg-predict`: one question about one image, answered with a checkpoint.

    tgg-predict --checkpoint CKPT --image IMG --prompt "Output the coordinate of the red circle." \\
                [--object x1,y1,x2,y2 ...] [--out boxes.png]

prints the model's answer and, with --out, draws on the image every box the answer contains
(red) and the given object boxes (green). The prompt holds one `<object>` per --object (pixel
boxes in the image as stored on disk, EXIF orientation applied); `<image>` is added by the
chat template. The library behind it is tgg_jax.inference.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from tgg_jax.data import coords
from tgg_jax.data.preprocess import load_image
from tgg_jax.inference import check_objects, checkpoint_tokenizer, load_model, predict
from tgg_jax.visualize import draw_boxes


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


def draw_answer(image, answer_text: str, objects: Sequence[Sequence[float]], title: str,
                path: str) -> list[tuple[float, float, float, float]]:
    """Save `image` (PIL, as the model saw it) with the answer's boxes in red and the object boxes
    in green; returns the answer's boxes in pixels."""
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
