"""Checks of a raw entry's text and boxes, in record form or a `Skip` naming what is wrong.

Text never contains `<image>`: the chat template puts it in front of the first user turn
(LLaVA moves it there too), so the raw files' `<image>` markers are stripped here; an entry
with more markers than images is skipped ("placeholder mismatch", SPEC §1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from tgg_jax import spec
from tgg_jax.data import coords
from tgg_jax.data.builders.raw_entries import Skip

ROLES = ("human", "gpt")
# Role spellings seen in LLaVA-format files, mapped to the two the record format uses.
_ROLE_ALIASES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}


def clean_text(value: Any, record_id: str, source: str | epath.Path, what: str) -> str:
    """A str that TFDS can store (valid UTF-8), stripped; raises Skip otherwise."""
    if not isinstance(value, str):
        raise Skip("malformed conversation", record_id, source, f"{what} is not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Skip("malformed conversation", record_id, source,
                   f"{what} is not valid UTF-8") from None
    return value.strip()


def check_conversation(turns: Any, record_id: str, source: str | epath.Path, *,
                       has_image: bool, num_objects: int) -> list[dict[str, str]]:
    """Validates LLaVA-style turns and returns them in record form; raises Skip if malformed.

    Rules: a non-empty list of {from, value}; roles human/gpt (user/assistant accepted),
    alternating from human to gpt; `<image>` only when the record has an image, and removed;
    `<object>` only in human turns, as many as the record's boxes; no empty answers.
    """

    def bad(detail):
        return Skip("malformed conversation", record_id, source, detail)

    if not isinstance(turns, list) or not turns:
        raise bad("conversations is not a non-empty list")
    if len(turns) % 2:
        raise bad(f"{len(turns)} turns: expected human/gpt pairs")
    out, object_count, image_count = [], 0, 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise bad(f"turn {i} is not a {{from, value}} object")
        role = _ROLE_ALIASES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role != ROLES[i % 2]:
            raise bad(f"turn {i} is from {turn['from']!r}, expected {ROLES[i % 2]!r}")
        value = clean_text(turn["value"], record_id, source, f"turn {i}")
        if spec.IMAGE_TOKEN in value:
            if not has_image:
                raise bad(f"turn {i} has {spec.IMAGE_TOKEN} but the record has no image")
            image_count += value.count(spec.IMAGE_TOKEN)
            value = value.replace(spec.IMAGE_TOKEN, "").strip()
        if spec.OBJECT_TOKEN in value and role == "gpt":
            raise bad(f"turn {i}: {spec.OBJECT_TOKEN} in an answer")
        object_count += value.count(spec.OBJECT_TOKEN)
        if role == "gpt" and not value:
            raise bad(f"turn {i}: empty answer")
        out.append({"from": role, "value": value})
    if image_count > 1:  # one image per record; stripping the extras would shift the text
        raise Skip("placeholder mismatch", record_id, source,
                   f"{image_count} {spec.IMAGE_TOKEN} in the text but 1 image")
    if object_count != num_objects:
        raise bad(f"{object_count} {spec.OBJECT_TOKEN} in the text but {num_objects} boxes")
    return out


def check_box(box: Any, width: int, height: int, record_id: str,
              source: str | epath.Path) -> tuple[float, float, float, float]:
    """A [x1, y1, x2, y2] pixel box clipped to the image; raises Skip when it is not a box or
    nothing of it is left inside the image."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise Skip("bad box", record_id, source, f"{box!r} is not 4 numbers") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise Skip("bad box", record_id, source, f"{box!r} is not finite")
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise Skip("bad box", record_id, source, f"{box!r} is empty inside {width}x{height}")
    return x1, y1, x2, y2


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """COCO / Visual Genome [x, y, w, h] -> [x1, y1, x2, y2]."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def box_text(box: Sequence[float], width: int, height: int) -> str:
    """Pixel box -> '[x1, y1, x2, y2]' on the padded square (SPEC §2)."""
    return coords.format_box(coords.pixel_to_square(box, width, height))


def clean_expression(text: str) -> str:
    """A referring expression or phrase for a prompt: single spaces, no trailing full stop."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip()
