"""Questions about images -> the tensors tgg_jax.torch.TinyGroundingGPT takes, with the tgg-jax
chat template and image preprocessing (tgg_jax.data: numpy, PIL and tokenizers only)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from tgg_jax.data.preprocess import crop_object, load_image, preprocess_image
from tgg_jax.data.template import encode_prompt
from tgg_jax.data.tokenizer import TggTokenizer, load_tokenizer
from tgg_jax.torch.model import CONFIG_FILE, TGGExportConfig


def _rgb(image, source: str) -> Image.Image:
    """Encoded bytes, a file path or a PIL image -> RGB with EXIF orientation applied, exactly as
    tgg_jax.data.preprocess.load_image decodes training images."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless; load_image then handles alpha, palettes, 16 bit
        return load_image(buffer.getvalue(), source=source)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return load_image(f.read(), source=str(image))
    return load_image(bytes(image), source=source)


class TGGProcessor:
    """Prompts, images and object boxes -> left-padded input_ids, attention_mask and uint8
    images / objects; decoding of generated tokens.

    A prompt is a string (one human turn) or LLaVA turns ending with a human turn; `<object>`
    marks each object box (original pixels x1, y1, x2, y2), `<image>` is added if absent.
    """

    def __init__(self, tokenizer: TggTokenizer, config: TGGExportConfig):
        self.tokenizer, self.config = tokenizer, config

    @classmethod
    def from_pretrained(cls, directory: str) -> TGGProcessor:
        config = TGGExportConfig.from_file(os.path.join(directory, CONFIG_FILE))
        return cls(load_tokenizer(os.path.join(directory, config.parts["llm"])), config)

    @property
    def stop_ids(self) -> tuple[int, int]:
        return self.tokenizer.im_end_id, self.tokenizer.endoftext_id

    def __call__(self, prompts: Sequence[str | list[dict]], images: Sequence | None = None,
                 objects: Sequence[Sequence[Sequence[float]]] | None = None) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask [B, T] (left-padded with <|endoftext|>), images uint8
        [B, 1, S, S, 3] (zeros where a prompt has none), objects uint8 [B, max No, S, S, 3]."""
        n = len(prompts)
        images = [None] * n if images is None else list(images)
        objects = [[] for _ in range(n)] if objects is None else [list(o) for o in objects]
        if not len(images) == len(objects) == n:
            raise ValueError(f"{n} prompts, {len(images)} images and {len(objects)} object lists")
        s, c = self.config.image_size, self.config
        max_objects = max(len(o) for o in objects)
        pixels = np.zeros((n, 1, s, s, 3), np.uint8)
        crops = np.zeros((n, max_objects, s, s, 3), np.uint8)
        ids = []
        for i, (prompt, image, boxes) in enumerate(zip(prompts, images, objects)):
            turns = [{"from": "human", "value": prompt}] if isinstance(prompt, str) else prompt
            ids.append(encode_prompt(turns, self.tokenizer, num_images=int(image is not None),
                                     num_objects=len(boxes), image_tokens=c.image_tokens,
                                     object_tokens=c.object_tokens, record_id=f"prompt {i}"))
            if image is None:
                if boxes:
                    raise ValueError(f"prompt {i}: object boxes need an image")
                continue
            img = _rgb(image, f"image {i}")
            pixels[i, 0] = preprocess_image(img, s)
            for k, box in enumerate(boxes):
                crops[i, k] = preprocess_image(crop_object(img, box, c.object_margin), s)
        length = max(len(x) for x in ids)
        input_ids = np.full((n, length), self.tokenizer.endoftext_id, np.int64)
        mask = np.zeros((n, length), np.int64)
        for i, x in enumerate(ids):
            input_ids[i, length - len(x):] = x
            mask[i, length - len(x):] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
                "images": torch.from_numpy(pixels), "objects": torch.from_numpy(crops)}

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Generated tokens [B, N] -> texts, each cut at its first stop token."""
        texts = []
        for row in tokens.tolist():
            stops = [k for k, t in enumerate(row) if t in self.stop_ids]
            texts.append(self.tokenizer.decode(row[: stops[0]] if stops else row))
        return texts
