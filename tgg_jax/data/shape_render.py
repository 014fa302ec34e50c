"""Drawing a tgg_shapes scene: its textured background and shapes as a palette PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from tgg_jax.data.shape_scenes import COLORS, Scene

_LEVELS = 256 - len(COLORS)  # palette entries for background blends; the rest are shape colours
# Vertices on the unit square, scaled into each object's box so the box is the tight bound.
_TRIANGLE = ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0))
_DIAMOND = ((0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5))


def _star_vertices() -> tuple[tuple[float, float], ...]:
    """Five-pointed star, point up, normalised to fill the unit square."""
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    xs, ys = radii * np.cos(angles), -radii * np.sin(angles)
    xs = (xs - xs.min()) / (xs.max() - xs.min())
    ys = (ys - ys.min()) / (ys.max() - ys.min())
    return tuple(zip(xs.tolist(), ys.tolist()))


_STAR = _star_vertices()


def _tone(rng: np.random.Generator) -> np.ndarray:
    """A muted background colour: grey with a faint tint, so the shape colours stand out."""
    grey = rng.uniform(95, 190)
    return np.clip(grey + rng.uniform(-18, 18, size=3), 0, 255)


def _texture(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Background palette indices [height, width] uint8 in [0, _LEVELS) and palette [_LEVELS, 3]."""
    rng = np.random.default_rng(scene.texture_seed)
    h, w = scene.height, scene.width
    c1, c2 = _tone(rng), _tone(rng)
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    along = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    if scene.background == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif scene.background == "stripes":
        t = np.floor(along / rng.integers(4, 12)) % 2
    elif scene.background == "checkers":
        cell = int(rng.integers(8, 24))
        t = (xx // cell + yy // cell) % 2
    else:  # smooth value noise: a coarse random grid upscaled, cheap to compress as PNG
        cell = int(rng.integers(8, 20))
        grid = rng.random((h // cell + 2, w // cell + 2))
        small = Image.fromarray((grid * 255).astype(np.uint8))
        size = ((w // cell + 2) * cell, (h // cell + 2) * cell)
        t = np.asarray(small.resize(size, Image.BILINEAR), np.float32)[:h, :w] / 255.0
    levels = np.linspace(0.0, 1.0, _LEVELS)[:, None]
    palette = np.clip(c1 * (1.0 - levels) + c2 * levels, 0, 255).astype(np.uint8)
    index = np.broadcast_to(np.rint(t * (_LEVELS - 1)), (h, w)).astype(np.uint8)
    return index, palette


def render_scene(scene: Scene) -> Image.Image:
    """The scene as a palette ("P") image of size (width, height); .convert("RGB") for pixels.

    Background blends use the first 250 palette entries and the shape colours the last 6, so
    the PNG stores one byte per pixel (about 3x faster to encode than RGB).
    """
    index, palette = _texture(scene)
    image = Image.fromarray(index, mode="L")
    shape_colors = np.asarray(list(COLORS.values()), np.uint8)
    image.putpalette(np.concatenate([palette, shape_colors]).tobytes())
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x1, y1, x2, y2 = (int(v) for v in shape.box)
        fill = _LEVELS + list(COLORS).index(shape.color)
        # PIL includes the end pixel, so the drawn pixels are columns x1 .. x2 - 1 (box = [x1, x2)).
        if shape.kind == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            unit = {"triangle": _TRIANGLE, "diamond": _DIAMOND, "star": _STAR}[shape.kind]
            side = x2 - 1 - x1
            draw.polygon([(x1 + u * side, y1 + v * side) for u, v in unit], fill=fill)
    return image


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes (deterministic for a given PIL build)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
