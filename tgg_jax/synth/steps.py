"""The steps of §3.2 over one image, each callable alone.

MLLM steps take `ask`, an `Asker` bound to a chat function (async messages -> answer text), the
prompts and the answer-retry count; `ground` takes a detector (tgg_jax.synth.detectors). Objects
are {id: {"phrase", "box" (pixels), "score", "phrase_boxes"}} with ids obj1, obj2, ... in L1
order, best box first.
"""

from __future__ import annotations

import base64
import collections
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from tgg_jax.synth import families, schema
from tgg_jax.synth.prompts import Prompt

NOTHING_FOUND = "detector found nothing"
PHRASE_NOT_FOUND = "phrase not found"
BOX_OUT_OF_RANGE = "box out of range"
DEGENERATE_BOX = "degenerate box"
# A detector box may overshoot the image by this fraction of its side before it counts as bad.
BOX_SLACK = 0.02

Chat = Callable[[list[dict[str, Any]]], Awaitable[str]]


def image_part(data: bytes, mime: str) -> dict[str, Any]:
    """An OpenAI chat content part carrying the image as a base64 data URL."""
    return {"type": "image_url",
            "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


class Asker:
    """Sends a prompt with the image and parses the answer, asking again (up to `retries` more
    times) when it is not JSON or off-schema. Every bad answer is counted in `problems`; the raw
    answers are kept in `raw[prompt name]` for the store."""

    def __init__(self, chat: Chat, prompts: Mapping[str, Prompt], retries: int,
                 problems: collections.Counter):
        self.chat, self.prompts, self.retries, self.problems = chat, prompts, retries, problems
        self.raw: dict[str, list[str]] = {}

    async def __call__(self, name: str, image: Mapping[str, Any], parse: Callable[[str], Any],
                       **values: Any) -> Any:
        system, user = self.prompts[name].render(**values)
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": [dict(image), {"type": "text", "text": user}]}]
        answers = self.raw.setdefault(name, [])
        error = None
        for _ in range(self.retries + 1):
            answers.append(await self.chat(messages))
            try:
                return parse(answers[-1])
            except schema.Bad as e:
                self.problems[e.reason] += 1
                error = e
        raise error


def object_lines(objects: Mapping[str, Mapping[str, Any]], renderer: families.Renderer) -> str:
    """'obj1: red cup [0.120, 0.300, 0.250, 0.480]', one line per object (the prompts' format)."""
    return "\n".join(f"{key}: {o['phrase']} {renderer.box(key)}" for key, o in objects.items())


def relation_lines(relations: Sequence[Sequence[str]]) -> str:
    return "\n".join(f"{a} {rel} {b}" for a, rel, b in relations) or "(none found)"


async def recognize_objects(ask: Asker, image: Mapping[str, Any], max_objects: int) -> list[str]:
    """L1: the objects present, as phrases."""
    return await ask("recognition", image, lambda a: schema.recognition(a, max_objects),
                     max_objects=max_objects)


def ground(detector, picture, key: str, phrases: Sequence[str], problems: collections.Counter,
           max_objects: int) -> tuple[dict[str, dict[str, Any]], dict[str, list]]:
    """S1: each phrase's boxes from the detector, checked (out of range or degenerate boxes are
    dropped and counted); returns (objects, the detections as found)."""
    width, height = picture.size
    found = detector.detect(picture, list(phrases), key)
    objects: dict[str, dict[str, Any]] = {}
    for phrase in phrases:
        boxes = []
        for box, score in found.get(phrase, []):
            x1, y1, x2, y2 = (float(v) for v in box)
            slack_x, slack_y = BOX_SLACK * width, BOX_SLACK * height
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2, score)) or (
                    x1 < -slack_x or y1 < -slack_y or x2 > width + slack_x or y2 > height + slack_y):
                problems[BOX_OUT_OF_RANGE] += 1
                continue
            x1, x2 = max(x1, 0.0), min(x2, float(width))
            y1, y2 = max(y1, 0.0), min(y2, float(height))
            if x2 - x1 < 1 or y2 - y1 < 1:
                problems[DEGENERATE_BOX] += 1
                continue
            boxes.append(([x1, y1, x2, y2], float(score)))
        if not boxes:
            problems[PHRASE_NOT_FOUND] += 1
        for box, score in sorted(boxes, key=lambda b: -b[1]):
            if len(objects) < max_objects:
                objects[f"obj{len(objects) + 1}"] = {"phrase": phrase, "box": box, "score": score,
                                                     "phrase_boxes": len(boxes)}
    detections = {p: [[list(map(float, b)), float(s)] for b, s in found.get(p, [])] for p in phrases}
    return objects, detections


async def extract_relations(ask: Asker, image, objects, renderer, max_relations: int,
                            problems: collections.Counter) -> list[list[str]]:
    """L2: (object1, relation, object2) triples over the grounded objects."""
    ids = set(objects)
    return await ask("relations", image, lambda a: schema.relations(a, ids, problems),
                     objects=object_lines(objects, renderer), max_relations=max_relations)


async def generate_local_qa(ask: Asker, image, objects, renderer, relations, max_qas: int,
                            problems: collections.Counter) -> dict[str, Any]:
    """Stage 2 material: a description per object and relation QAs (with options or not)."""
    ids = set(objects)
    return await ask("local_qa", image, lambda a: schema.local_qa(a, ids, problems),
                     objects=object_lines(objects, renderer),
                     relations=relation_lines(relations), max_qas=max_qas)


async def generate_conversation(ask: Asker, image, objects, renderer, relations, max_rounds: int,
                                problems: collections.Counter) -> list[dict[str, str]]:
    """Stage 3: a multi-round grounding conversation."""
    ids = set(objects)
    return await ask("conversation", image, lambda a: schema.conversation(a, ids, problems),
                     objects=object_lines(objects, renderer),
                     relations=relation_lines(relations), max_rounds=max_rounds)


async def generate_description(ask: Asker, image, objects, renderer, relations) -> str:
    """Stage 3: a grounding description of the whole image."""
    ids = set(objects)
    return await ask("description", image, lambda a: schema.description(a, ids),
                     objects=object_lines(objects, renderer),
                     relations=relation_lines(relations))
