"""Pictures people would rather see than read: boxes drawn on images, training curves."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

TRUE_COLOR = (40, 200, 60)
PRED_COLOR = (230, 40, 40)


def draw_boxes(image: bytes | Image.Image, *, true_box: Sequence[float] | None = None,
               pred_box: Sequence[float] | None = None, boxes: Sequence[Sequence[float]] = (),
               title: str = "", path: str | None = None, scale: int = 2) -> Image.Image:
    """Image with the true box (green), the predicted box (red) and any other boxes (red), in
    original pixels; a caption strip with `title` underneath. Saved as PNG when `path` is given."""
    img = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    img = img.convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for box, color in [(true_box, TRUE_COLOR), (pred_box, PRED_COLOR)] + [(b, PRED_COLOR) for b in boxes]:
        if box is not None:
            # A model can predict x2 < x1 or y2 < y1; PIL refuses those, so draw the corners' span.
            x1, y1, x2, y2 = (v * scale for v in box)
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=color, width=2)
    if title:
        lines = title.splitlines()
        canvas = Image.new("RGB", (img.width, img.height + 14 * len(lines) + 6), (255, 255, 255))
        canvas.paste(img, (0, 0))
        text = ImageDraw.Draw(canvas)
        for i, line in enumerate(lines):
            text.text((4, img.height + 3 + 14 * i), line[:90], fill=(0, 0, 0))
        img = canvas
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        img.save(path)
    return img


def plot_history(history_file: str, path: str) -> None:
    """Training loss, held-out loss, learning rate and grad norm against step, from history.jsonl."""
    if not os.path.isfile(history_file):
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(history_file)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if evals:
        axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="held-out")
    axes[0].set(title="loss", xlabel="step", yscale="log")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set(title="learning rate", xlabel="step")
    axes[2].plot([r["step"] for r in train], [r["grad_norm"] for r in train])
    axes[2].set(title="grad norm", xlabel="step", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
