"""What the evaluation-benchmark builders share: the benchmark's question as the record's turn.

An eval record asks what the benchmark's evaluator asks: both format it with the same function
of `tgg_jax.spec` (SPEC §2 prompts), so `prompt_from="record"` and `prompt_from="evaluator"`
agree. The human turn is followed by the reference answer where the split has public labels; a
test split without labels keeps the human turn alone (the runner asks up to the last human turn).
"""

from __future__ import annotations

import base64
import binascii
import io
from PIL import Image

from tgg_jax import spec
from tgg_jax.data.builders import checks, raw_entries


def conversation(question: str, answer: str, record_id: str, source: str, *,
                 has_image: bool = True) -> list[dict[str, str]]:
    """[human: `question` (a spec prompt), after the image] + [gpt: answer] when answer is
    non-empty."""
    turns = spec.human_turn(question, image=has_image)
    if answer:
        turns.append({"from": "gpt", "value": answer})
        return checks.check_conversation(turns, record_id, source, has_image=has_image,
                                         num_objects=0)
    # check_conversation wants human/gpt pairs; a label-less question is one human turn.
    (turn,) = turns
    value = checks.clean_text(turn["value"], record_id, source, "prompt")
    return [{"from": "human", "value": value.replace(spec.IMAGE_TOKEN, "").strip()}]


def decode_base64_image(data: str, record_id: str, source: str) -> tuple[bytes, int, int]:
    """(image bytes, width, height) of a base64 image cell; raises Skip if it is not one."""
    if not data:
        raise raw_entries.Skip("missing image", record_id, source)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise raw_entries.Skip("corrupt image", record_id, source, f"bad base64: {e}") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return raw, image.width, image.height
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise raw_entries.Skip("corrupt image", record_id, source, f"{type(e).__name__}: {e}") from None
