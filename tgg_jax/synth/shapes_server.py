"""The `shapes` backend: a chat-completions server that answers tgg-synth's prompts from the
ground truth of tgg_shapes scenes, so the whole pipeline runs on this machine.

`write_images(out, count)` draws scenes of tgg_jax.data.shapes into out/ as PNGs with
out/annotations.json ({image: [{"phrase", "box", "expression"}]}, the `annotations` detector's
format). The server recognises an image by the SHA-256 of its bytes, and a step by its prompt's
system text; answers are exact (relations from the boxes), in the JSON each prompt asks for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from tgg_jax.data import coords, shape_render, shape_scenes, shape_tasks, shapes
from tgg_jax.synth import filters, prompts as prompts_lib
from tgg_jax.synth.server import ChatServer, Reply, messages_text

_OBJECT_LINE = re.compile(r"^(obj\d+): (.+?) (\[[^\]]*\])$", re.M)


def write_images(out: str | pathlib.Path, count: int, seed: int = 0, split: str = "train") -> list[str]:
    """Scenes 0 .. count-1 of tgg_shapes' `split` stream as PNGs plus annotations.json."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = {}
    for index in range(count):
        scene = shape_scenes.sample_scene(shapes.record_rng(seed, split, index))
        name = f"shapes_{split}_{index:06d}.png"
        (out / name).write_bytes(shape_render.encode_png(shape_render.render_scene(scene)))
        table[name] = [{"phrase": s.name, "box": list(s.box), "expression": e}
                       for s, e in zip(scene.shapes, shape_tasks.referring_expressions(scene))]
    (out / "annotations.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return sorted(table)


def spatial_relations(boxes: Mapping[str, Sequence[float]]) -> list[list[str]]:
    """Every (a, "left of" | "above", b) that holds with a gap between the boxes."""
    out = []
    for a, box_a in boxes.items():
        for b, box_b in boxes.items():
            if a != b and box_a[2] < box_b[0]:
                out.append([a, "left of", b])
            if a != b and box_a[3] < box_b[1]:
                out.append([a, "above", b])
    return out


def _listing(keys: Sequence[str]) -> str:
    names = [f"the {{{k}}}" for k in keys]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class ShapesAnswerer:
    """answer(request) for ChatServer, from the scenes of an image folder made by write_images."""

    def __init__(self, image_root: str | pathlib.Path, prompt_dir: str | pathlib.Path,
                 version: str = "v1"):
        root = pathlib.Path(image_root)
        self.table = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
        self.by_hash = {hashlib.sha256((root / name).read_bytes()).hexdigest(): name
                        for name in self.table}
        self.sizes = {}
        for name in self.table:
            with Image.open(root / name) as image:
                self.sizes[name] = image.size
        self.tasks = {p.system: name for name, p in prompts_lib.load(prompt_dir, version).items()}

    def __call__(self, request: Mapping[str, Any]) -> str | Reply:
        system, user, image = messages_text(request)
        task = self.tasks.get(system)
        if task is None or image is None or "," not in image:
            return Reply(400, b'{"error": "not a tgg-synth prompt with an image"}')
        name = self.by_hash.get(hashlib.sha256(base64.b64decode(image.split(",", 1)[1])).hexdigest())
        if name is None:
            return Reply(400, b'{"error": "unknown image"}')
        entries = self.table[name]
        if task == "recognition":
            return json.dumps({"objects": list(dict.fromkeys(e["phrase"] for e in entries))})
        width, height = self.sizes[name]
        boxes = {key: coords.square_to_pixel(coords.parse_first_box(box), width, height)
                 for key, _, box in _OBJECT_LINE.findall(user)}
        relations = spatial_relations(boxes)
        return json.dumps(getattr(self, task)(boxes, relations, entries))

    def relations(self, boxes, relations, entries):
        return {"relations": relations[:12]}

    def local_qa(self, boxes, relations, entries):
        descriptions = {}
        for key, box in boxes.items():
            best = max(entries, key=lambda e: filters.iou(e["box"], box))
            descriptions[key] = best["expression"]
        qas = []
        for a, rel, b in relations:
            holders = [x for x, r, y in relations if r == rel and y == b]
            others = [c for c in boxes if c not in holders and c != b]
            if len(holders) == 1:
                qas.append({"question": f"Which object is {rel} the {{{b}}}?", "answer": f"{{{a}}}"})
            if others:
                qas.append({"question": f"Which of these is {rel} the {{{b}}}?",
                            "options": [f"{{{a}}}", f"{{{others[0]}}}"], "answer": f"{{{a}}}"})
            qas.append({"question": f"Where is the {{{a}}} relative to the {{{b}}}?",
                        "answer": f"The {{{a}}} is {rel} the {{{b}}}."})
        return {"descriptions": descriptions, "qas": qas[:6]}

    def conversation(self, boxes, relations, entries):
        rounds = [{"question": "Which objects can you see in the image?",
                   "answer": f"I can see {_listing(list(boxes))}."}]
        for a, rel, b in relations[:2]:
            rounds.append({"question": f"What is {rel} the {{{b}}}?",
                           "answer": f"The {{{a}}} is {rel} the {{{b}}}."})
        return {"conversation": rounds}

    def description(self, boxes, relations, entries):
        sentences = [f"The image shows {_listing(list(boxes))} on a textured background."]
        sentences += [f"The {{{a}}} is {rel} the {{{b}}}." for a, rel, b in relations[:3]]
        return {"description": " ".join(sentences)}


def serve(image_root, prompt_dir, version="v1", latency_s=0.0, port=0) -> ChatServer:
    """A started ChatServer answering from the shapes scenes in image_root."""
    return ChatServer(ShapesAnswerer(image_root, prompt_dir, version), latency_s, port=port).start()
