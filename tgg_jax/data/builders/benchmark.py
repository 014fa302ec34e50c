"""What the evaluation-benchmark builders share: the evaluator's prompt as the record's question.

An eval record asks exactly what `tgg_jax.evals.get_evaluator(NAME).prompt(fields)` asks (SPEC §2
prompts), so `prompt_from="record"` and `prompt_from="evaluator"` agree. The human turn is
followed by the reference answer where the split has public labels; a test split without labels
keeps the human turn alone (the runner asks up to the last human turn).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from tgg_jax import evals
from tgg_jax.data.builders import common


def conversation(benchmark: str, fields: Mapping[str, Any], answer: str, record_id: str,
                 source: str, *, has_image: bool = True) -> list[dict[str, str]]:
    """[human: the evaluator's prompt of `fields`] + [gpt: answer] when answer is non-empty."""
    turns = list(evals.get_evaluator(benchmark).prompt(fields))
    if answer:
        turns.append({"from": "gpt", "value": answer})
        return common.check_conversation(turns, record_id, source, has_image=has_image,
                                         num_objects=0)
    # check_conversation wants human/gpt pairs; a label-less question is one human turn.
    (turn,) = turns
    value = common.clean_text(turn["value"], record_id, source, "prompt")
    return [{"from": "human", "value": value.replace(common.IMAGE_TOKEN, "").strip()}]


def decode_base64_image(data: str, record_id: str, source: str) -> tuple[bytes, int, int]:
    """(image bytes, width, height) of a base64 image cell; raises Skip if it is not one."""
    if not data:
        raise common.Skip("missing image", record_id, source)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise common.Skip("corrupt image", record_id, source, f"bad base64: {e}") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return raw, image.width, image.height
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise common.Skip("corrupt image", record_id, source, f"{type(e).__name__}: {e}") from None
