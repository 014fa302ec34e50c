"""Image preprocessing (SPEC §2): decode to RGB, pad to a centred square, resize to 336 bicubic,
object crops with a context margin. numpy + PIL only: this runs in data-loader workers.

Images leave here as uint8 [size, size, 3] (4x smaller to ship than float32); the model applies
`normalize` on device, once with the CLIP and once with the ImageNet statistics.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tgg_jax.data.coords import pad_offset
from tgg_jax.spec import OBJECT_MARGIN, PAD_FILL  # PAD_FILL: LLaVA's expand2square background
# Alpha (SPEC §2): "drop" keeps each pixel's colour and discards its alpha, as PIL's
# convert("RGB") and so LLaVA-1.5 do; "white" composites on white instead (web graphics drawn
# for white pages), an option that changes the pixels the model sees on transparent images.
ALPHA_MODES = ("drop", "white")
ALPHA_BACKGROUND = (255, 255, 255)
IMAGE_SIZE = 336


class BadImageError(ValueError):
    """Image bytes that cannot be decoded (empty, truncated, corrupt, unsupported mode)."""


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit grayscale ("I;16*", or "I" holding 16-bit values) -> 8-bit "L" by v / 257, which
    maps 0..65535 onto 0..255 exactly (PIL's own convert("L") clips at 255 instead)."""
    values = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.round(np.clip(values, 0, 65535) / 257.0).astype(np.uint8), "L")


def _to_rgb(img: Image.Image, alpha: str = "drop") -> Image.Image:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        img = _sixteen_bit_to_l(img)
    rgb_convertible = ("RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA", "RGBA", "RGBa", "LA")
    if alpha == "drop" and img.mode in rgb_convertible:
        return img.convert("RGB")
    if img.mode == "P":  # palette: its transparency entry becomes an alpha channel
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    raise BadImageError(f"unsupported image mode {img.mode!r}")


def load_image(data: bytes, *, source: str = "", alpha: str = "drop") -> Image.Image:
    """Encoded bytes -> RGB image with EXIF orientation applied; alpha: "drop" (SPEC §2, PIL's
    convert("RGB")) or "white" (composited on white).

    Raises BadImageError naming `source` for empty, truncated or corrupt data.
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    if not data:
        raise BadImageError(f"{source or 'image'}: empty image data")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode now so truncation is caught here, not later in a worker
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img, alpha)
    except BadImageError as e:
        raise BadImageError(f"{source or 'image'}: {e}") from e
    except (OSError, EOFError, SyntaxError, ValueError, struct.error, UnidentifiedImageError,
            Image.DecompressionBombError) as e:  # what PIL's decoders raise on broken files
        raise BadImageError(f"{source or 'image'}: cannot decode image: {e}") from e


def expand_to_square(img: Image.Image) -> Image.Image:
    """Centred max(W, H) square with PAD_FILL, pasted at coords.pad_offset (boxes depend on it)."""
    width, height = img.size
    if width == height:
        return img
    size = max(width, height)
    square = Image.new("RGB", (size, size), PAD_FILL)
    square.paste(img, pad_offset(width, height))
    return square


def preprocess_image(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB image -> uint8 [size, size, 3]: pad to square, bicubic resize."""
    if img.mode != "RGB":
        raise ValueError(f"preprocess_image expects an RGB image (use load_image), got {img.mode}")
    square = expand_to_square(img)
    if square.size != (size, size):
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.uint8)


def normalize(pixels, mean: Sequence[float], std: Sequence[float], xp=np):
    """uint8 [..., 3] -> float32 (pixels / 255 - mean) / std; `xp` is numpy or jax.numpy."""
    x = xp.asarray(pixels).astype(xp.float32) / 255.0
    return (x - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)


def crop_object(img: Image.Image, box_pixels: Sequence[float], margin: float = OBJECT_MARGIN,
                rng: np.random.Generator | None = None, jitter: float = 0.0) -> Image.Image:
    """Crop an object box (x1, y1, x2, y2 in pixels) with context (SPEC §2 "zoom").

    The box is first clipped to the image; then left/right move out by margin x its width and
    top/bottom by margin x its height, clipped to the image, rounded outwards to whole pixels.
    With `rng` and jitter > 0 each side's margin is drawn from U[m(1-jitter), m(1+jitter)]
    (training only).
    """
    width, height = img.size
    x1, y1, x2, y2 = (float(v) for v in box_pixels)
    if not np.all(np.isfinite([x1, y1, x2, y2])):
        raise ValueError(f"object box {tuple(box_pixels)} has non-finite coordinates")
    x1, x2 = max(x1, 0.0), min(x2, float(width))
    y1, y2 = max(y1, 0.0), min(y2, float(height))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"object box {tuple(box_pixels)} has no area inside the "
                         f"{width}x{height} image")
    if rng is not None and jitter > 0:
        left, top, right, bottom = rng.uniform(margin * (1 - jitter), margin * (1 + jitter), 4)
    else:
        left = top = right = bottom = margin
    box_w, box_h = x2 - x1, y2 - y1
    crop = (max(int(np.floor(x1 - left * box_w)), 0), max(int(np.floor(y1 - top * box_h)), 0),
            min(int(np.ceil(x2 + right * box_w)), width),
            min(int(np.ceil(y2 + bottom * box_h)), height))
    return img.crop(crop)
