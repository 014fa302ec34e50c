"""The `annotations` detector's table from boxes a dataset already has: COCO instances, Visual
Genome objects, Flickr30K Entities phrases. Written once per image folder; the engine then
skips detection and grounds each listed object with the source's own boxes.

Table: {image path relative to the image folder: [{"phrase", "box": [x1, y1, x2, y2]}]} in
pixels of the image as stored.
"""

from __future__ import annotations

import collections
import json
import pathlib
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator

from etils import epath

from tgg_jax.data.builders import checks, flickr30k_entities, raw_entries, raw_json

Table = dict[str, list[dict]]
SOURCES = ("coco", "visual_genome", "flickr30k_entities")


def _entry(phrase: str, box) -> dict:
    return {"phrase": " ".join(str(phrase).split()).lower(), "box": [float(v) for v in box]}


def from_coco(instances: pathlib.Path) -> Table:
    """COCO `instances_*.json`: each annotation's category name and bbox ([x, y, w, h])."""
    data = raw_json.read_json(epath.Path(instances), dict)
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    files = {im["id"]: im["file_name"] for im in data.get("images", [])}
    table: Table = collections.defaultdict(list)
    for ann in data.get("annotations", []):
        if ann.get("iscrowd"):
            continue  # a crowd region is not one object
        if ann.get("image_id") in files and ann.get("category_id") in names:
            table[files[ann["image_id"]]].append(
                _entry(names[ann["category_id"]], checks.xywh_to_xyxy(ann["bbox"])))
    return dict(table)


def from_visual_genome(objects: pathlib.Path, image_data: pathlib.Path) -> Table:
    """Visual Genome `objects.json` (each object's first name, x/y/w/h) with `image_data.json`'s
    url giving the file (`VG_100K/1.jpg`), as the visual_genome builder finds it."""
    paths = {}
    for info in raw_json.read_json(epath.Path(image_data), list):
        if isinstance(info, dict) and isinstance(info.get("url"), str):
            paths[info.get("image_id", info.get("id"))] = "/".join(info["url"].rsplit("/", 2)[-2:])
    table: Table = collections.defaultdict(list)
    for item in raw_json.read_json(epath.Path(objects), list):
        path = paths.get(item.get("image_id", item.get("id")))
        for obj in item.get("objects", []) if path else []:
            names = obj.get("names") or ([obj["name"]] if obj.get("name") else [])
            if names:
                table[path].append(_entry(names[0], checks.xywh_to_xyxy(
                    [obj["x"], obj["y"], obj["w"], obj["h"]])))
    return dict(table)


def from_flickr30k_entities(raw_dir: pathlib.Path) -> Table:
    """Flickr30K Entities: every phrase of every caption with each box of its entity (the
    Annotations' 1-based inclusive corners become pixel edges, as the builder reads them)."""
    raw = epath.Path(raw_dir)
    table: Table = {}
    for sentences in sorted((raw / "Sentences").glob("*.txt")):
        image_id = sentences.stem
        try:
            boxes = flickr30k_entities.entity_boxes(raw / "Annotations" / f"{image_id}.xml",
                                                    image_id, *_size(raw, image_id))
        except raw_entries.Skip:
            continue
        seen, entries = set(), []
        for match in _phrases(sentences.read_text(encoding="utf-8")):
            entity, phrase = match
            for box in boxes.get(entity, []):
                key = (phrase.lower(), tuple(box))
                if key not in seen:
                    seen.add(key)
                    entries.append(_entry(phrase, box))
        if entries:
            table[f"{image_id}.jpg"] = entries
    return table


def _phrases(text: str) -> Iterator[tuple[str, str]]:
    for match in flickr30k_entities.PHRASE.finditer(text):
        yield match.group(1), match.group(3).strip()


def _size(raw: epath.Path, image_id: str) -> tuple[float, float]:
    """The image size an Annotations file states (boxes are clipped to it)."""
    try:
        root = ElementTree.fromstring((raw / "Annotations" / f"{image_id}.xml").read_bytes())
        return float(root.findtext("size/width")), float(root.findtext("size/height"))
    except (OSError, ElementTree.ParseError, TypeError, ValueError):
        raise raw_entries.Skip("unreadable annotation", image_id, raw / "Annotations") from None


def convert(source: str, raw_dir: str) -> Table:
    """The table of `source` from its release folder (COCO: the instances file itself)."""
    raw = pathlib.Path(raw_dir).expanduser()
    if source == "coco":
        return from_coco(raw)
    if source == "visual_genome":
        return from_visual_genome(raw / "objects.json", raw / "image_data.json")
    if source == "flickr30k_entities":
        return from_flickr30k_entities(raw)
    raise ValueError(f"annotations source must be one of {', '.join(SOURCES)}, got {source!r}")


def write(table: Table, out: str) -> None:
    path = pathlib.Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
