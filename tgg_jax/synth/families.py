"""QA generation answers -> records of the paper's four families (§3.2, Figs. 8-9).

Objects are referred to by placeholders {objN} in the answers; each family renders them its
own way:

- image_box (stage 2, image <-> coordinates): "Where is <object> in the image?" -> box; the
  description of an object located ("Output the coordinate of ...") and described ("Describe
  the region [box].") from its box; relation QAs with the objects of the question as object
  images and those of the answer as boxes; multiple-choice QAs with the question's objects as
  boxes and the options as object images.
- text_image (stage 2, text <-> object images): multiple-choice QAs with the question's objects
  named and the options as object images; relation QAs with the question's objects as object
  images and the answer's named.
- grounding_conversations / grounding_descriptions (stage 3): every object as "phrase [box]".

A record: {"family", "id", "conversations", "objects" (pixel boxes, one per <object>),
"uses", "crops", "options"} — the last three (object ids) are what the filters look at.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tgg_jax import spec
from tgg_jax.data import coords
from tgg_jax.synth.schema import PLACEHOLDER

OBJECT = spec.OBJECT_TOKEN
_WITH_ARTICLE = re.compile(r"(\b[Tt]he )?" + PLACEHOLDER.pattern)
IMAGE = spec.IMAGE_TOKEN + "\n"
LETTERS = "ABCD"
STAGE2 = ("image_box", "text_image")
STAGE3 = ("grounding_conversations", "grounding_descriptions")
FAMILIES = STAGE2 + STAGE3
WHERE = f"Where is {spec.OBJECT_TOKEN} in the image?"
DESCRIBE_IMAGE = (
    "Describe this image in detail, giving the coordinates of each object you mention.",
    "Give a detailed description of the image and ground every object in it with its box.",
    "What is in this image? Describe it thoroughly and locate the objects you name.",
)
OPTIONS_SUFFIX = "\n" + spec.LETTER_ANSWER


class Renderer:
    """Renders placeholders of one image's objects. objects: id -> {phrase, box (pixels)}."""

    def __init__(self, objects: Mapping[str, Mapping[str, Any]], width: int, height: int,
                 descriptions: Mapping[str, str] | None = None):
        self.objects, self.width, self.height = objects, width, height
        self.descriptions = descriptions or {}

    def box(self, key: str) -> str:
        return coords.format_box(coords.pixel_to_square(self.objects[key]["box"], self.width,
                                                        self.height))

    def name(self, key: str) -> str:
        return self.descriptions.get(key) or f"the {self.objects[key]['phrase']}"

    def grounded(self, key: str) -> str:
        return f"{self.objects[key]['phrase']} {self.box(key)}"

    def sub(self, text: str, how: str, crops: list[str]) -> str:
        """text with each {objN} as how = 'object' (appended to crops), 'box', 'name' or 'grounded'."""

        def one(match):
            article, key = match.group(1) or "", match.group(2)
            if how == "object":
                crops.append(key)
                return article + OBJECT
            value = {"box": self.box, "name": self.name, "grounded": self.grounded}[how](key)
            # "the {obj1}" with the name "the red cup": one article, in the text's case;
            # as a box, "the region [x1, y1, x2, y2]".
            if article and value.lower().startswith("the "):
                value = value[4:]
            elif article and how == "box":
                value = "region " + value
            return article + value

        return _WITH_ARTICLE.sub(one, text)


def _record(family: str, record_id: str, turns: Sequence[tuple[str, str]], renderer: Renderer,
            crops: list[str], uses: Sequence[str], options: Sequence[str] = ()) -> dict[str, Any]:
    conversations = []
    for i, (question, answer) in enumerate(turns):
        conversations += [{"from": "human", "value": (IMAGE if i == 0 else "") + question},
                          {"from": "gpt", "value": answer}]
    return {"family": family, "id": record_id, "conversations": conversations,
            "objects": [list(renderer.objects[k]["box"]) for k in crops],
            "uses": sorted(set(uses), key=_order), "crops": list(crops), "options": list(options)}


def _order(key: str) -> int:
    return int(key[3:])


def _choice(qa, renderer: Renderer, how: str, rng: random.Random) -> tuple[str, str, list[str], list[str]]:
    """A multiple-choice question: its objects rendered `how`, options as object images in a
    shuffled order, the answer a letter."""
    crops: list[str] = []
    question = renderer.sub(qa["question"], how, crops)
    options = [PLACEHOLDER.fullmatch(o).group(1) for o in qa["options"]]
    rng.shuffle(options)
    lines = [f"{LETTERS[i]}. {OBJECT}" for i in range(len(options))]
    crops += options
    answer = LETTERS[options.index(PLACEHOLDER.fullmatch(qa["answer"]).group(1))]
    return question + "\n" + "\n".join(lines) + OPTIONS_SUFFIX, answer, crops, options


def stage2(image_id: str, local_qa: Mapping[str, Any], renderer: Renderer,
           families: Sequence[str]) -> list[dict[str, Any]]:
    """image_box and text_image records from the local QA answer."""
    renderer.descriptions = local_qa["descriptions"]
    out: list[dict[str, Any]] = []
    n = {"image_box": 0, "text_image": 0}

    def add(family, *args, **kwargs):
        if family in families:
            out.append(_record(family, f"{image_id}-{family}-{n[family]:03d}", *args, **kwargs))
            n[family] += 1

    for key in sorted(renderer.objects, key=_order):
        add("image_box", [(WHERE, renderer.box(key))], renderer, [key], [key])
        if key in local_qa["descriptions"]:
            text = local_qa["descriptions"][key].rstrip(".")
            add("image_box", [(spec.rec_prompt(text), renderer.box(key))], renderer, [], [key])
            add("image_box", [(spec.region_caption_prompt(renderer.box(key)), text)], renderer, [], [key])
    for i, qa in enumerate(local_qa["qas"]):
        uses = PLACEHOLDER.findall(" ".join([qa["question"], qa["answer"], *qa.get("options", ())]))
        # Option order is shuffled by a seed fixed per image and QA, so reruns give equal records.
        rng = random.Random(f"{image_id}/{i}")
        if "options" in qa:
            for family, how in (("image_box", "box"), ("text_image", "name")):
                question, answer, crops, options = _choice(qa, renderer, how, rng)
                add(family, [(question, answer)], renderer, crops, uses, options)
            continue
        crops: list[str] = []
        question = renderer.sub(qa["question"], "object", crops)
        if PLACEHOLDER.search(qa["answer"]):
            add("image_box", [(question, renderer.sub(qa["answer"], "box", []))], renderer, crops, uses)
        add("text_image", [(question, renderer.sub(qa["answer"], "name", []))], renderer,
            list(crops), uses)
    return out


def conversation(image_id: str, rounds: Sequence[Mapping[str, str]], renderer: Renderer) -> dict:
    """The grounding_conversations record: every object as 'phrase [box]'."""
    turns = [(renderer.sub(r["question"], "grounded", []), renderer.sub(r["answer"], "grounded", []))
             for r in rounds]
    uses = PLACEHOLDER.findall(" ".join(r["question"] + " " + r["answer"] for r in rounds))
    return _record("grounding_conversations", f"{image_id}-grounding_conversations-000", turns,
                   renderer, [], uses)


def description(image_id: str, text: str, renderer: Renderer) -> dict:
    """The grounding_descriptions record: a fixed instruction (one of a few, by image) and the
    description with every object as 'phrase [box]'."""
    instruction = DESCRIBE_IMAGE[random.Random(image_id).randrange(len(DESCRIBE_IMAGE))]
    return _record("grounding_descriptions", f"{image_id}-grounding_descriptions-000",
                   [(instruction, renderer.sub(text, "grounded", []))], renderer, [],
                   PLACEHOLDER.findall(text))
