"""flickr30k_entities: Flickr30k captions with grounded phrases -> grounded-description records.

Raw layout under raw_dir (as the Flickr30k Entities release): `Sentences/{image_id}.txt` (five
captions, phrases marked `[/EN#{entity}/{type} words]`), `Annotations/{image_id}.xml` (PASCAL VOC
style: each <object> has one or more <name> entity ids and a <bndbox> with 1-based inclusive
pixel corners, or <nobndbox>/<scene> when it has none), images in `image_dir`, and optionally
`train.txt` / `val.txt` / `test.txt` listing image ids (without them every image is train).

One record per caption: "{GROUNDED_DESCRIPTION_PROMPT}" -> the caption with every phrase that has
boxes followed by them, e.g. "A man [0.120, 0.050, 0.610, 0.980] in an orange hat
[0.300, 0.050, 0.450, 0.160] stares at something." (several boxes: one after another).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import xml.etree.ElementTree as ElementTree

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax.data.builders import base, checks, raw_entries, records

GROUNDED_DESCRIPTION_PROMPT = ("Briefly describe the image and give the coordinate of each "
                               "object you mention.")
# [/EN#18/people A man] -> entity 18, phrase "A man"; types may repeat (/people/other).
PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)*)\s+([^\]]*)\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:'])")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Flickr30kEntitiesConfig(tfds.core.BuilderConfig):
    """Folder names relative to raw_dir."""

    sentences_dir: str = "Sentences"
    annotations_dir: str = "Annotations"
    image_dir: str = "flickr30k-images"


class Flickr30kEntities(base.RawDataBuilder):
    """Flickr30k Entities captions as grounded descriptions (phrases with their boxes)."""

    name = "flickr30k_entities"
    HOMEPAGE = "https://github.com/BryanPlummer/flickr30k_entities"
    BUILDER_CONFIGS = [Flickr30kEntitiesConfig(name="default", description="all five captions")]

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        self._raw_dir = raw_dir
        sentences = raw_dir / config.sentences_dir
        if not sentences.is_dir():
            raise FileNotFoundError(f"{self.name}: {sentences} is not a directory")
        lists = {s: raw_dir / f"{s}.txt" for s in SPLITS if (raw_dir / f"{s}.txt").exists()}
        if lists:
            ids = {s: [line.strip() for line in path.read_text().splitlines() if line.strip()]
                   for s, path in lists.items()}
        else:
            ids = {"train": sorted(p.stem for p in sentences.glob("*.txt"))}
        return {s: [raw_entries.Entry(i, str(sentences / f"{i}.txt"), i) for i in split_ids]
                for s, split_ids in ids.items() if split_ids}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        config, image_id = self.builder_config, entry.data
        xml_path = self._raw_dir / config.annotations_dir / f"{image_id}.xml"
        try:
            captions = epath.Path(entry.source).read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, UnicodeDecodeError) as e:
            raise raw_entries.Skip("unreadable annotation", image_id, entry.source, repr(e)) from None
        image_path = self.image_folder(self._raw_dir, config.image_dir) / f"{image_id}.jpg"
        image, width, height = self.images.read(image_path, image_id)
        boxes = entity_boxes(xml_path, image_id, width, height)
        for k, caption in enumerate(line for line in captions if line.strip()):
            record_id = f"{image_id}_{k}"
            try:
                answer = _grounded_caption(caption, boxes, width, height)
            except ValueError as e:
                yield raw_entries.Skip("malformed conversation", record_id, entry.source, str(e))
                continue
            yield records.make_record(
                record_id=record_id, source="flickr30k_entities",
                conversations=[{"from": "human", "value": GROUNDED_DESCRIPTION_PROMPT},
                               {"from": "gpt", "value": answer}],
                image=image, width=width, height=height)


def entity_boxes(path: epath.Path, image_id: str, width: int,
                  height: int) -> dict[str, list[tuple[float, float, float, float]]]:
    """Entity id -> its boxes in pixels [x1, y1, x2, y2]; raises Skip for an unreadable file."""
    try:
        root = ElementTree.fromstring(path.read_bytes())
    except FileNotFoundError:
        raise raw_entries.Skip("unreadable annotation", image_id, path, "missing") from None
    except ElementTree.ParseError as e:
        raise raw_entries.Skip("unreadable annotation", image_id, path, str(e)) from None
    boxes = collections.defaultdict(list)
    for obj in root.iter("object"):
        corners = obj.find("bndbox")
        if corners is None:  # <nobndbox> / <scene>: the entity has no box
            continue
        try:
            xmin, ymin, xmax, ymax = (float(corners.findtext(k)) for k in
                                      ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise raw_entries.Skip("unreadable annotation", image_id, path, "bad <bndbox>") from None
        # 1-based inclusive pixel indices -> 0-based pixel edges.
        box = checks.check_box((xmin - 1, ymin - 1, xmax, ymax), width, height, image_id, path)
        for name in obj.findall("name"):
            boxes[(name.text or "").strip()].append(box)
    return boxes


def _grounded_caption(caption: str, boxes, width: int, height: int) -> str:
    """'[/EN#1/people A man] walks .' -> 'A man [x1, y1, x2, y2] walks.'"""

    def ground(match: re.Match) -> str:
        phrase = match.group(3).strip()
        entity_boxes = boxes.get(match.group(1), [])
        return " ".join([phrase] + [checks.box_text(b, width, height) for b in entity_boxes])

    text = PHRASE.sub(ground, caption)
    if "[/EN#" in text:
        raise ValueError(f"unparsed phrase markup in {caption!r}")
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))
    if not text:
        raise ValueError("empty caption")
    return text
