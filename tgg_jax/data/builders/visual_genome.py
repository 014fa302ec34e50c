"""visual_genome: Visual Genome region descriptions -> region-caption and REC records (stage 2).

Raw layout under raw_dir: `region_descriptions.json` (a list of `{"id": image_id, "regions":
[{"region_id", "x", "y", "width", "height", "phrase"}]}`), `image_data.json` (a list of
`{"image_id" (or "id"), "url", "width", "height"}`; the url's last two parts, e.g.
`VG_100K_2/1.jpg`, locate the file under image_root).

An image has ~50 regions, and every record carries its image's bytes, so regions are grouped:
each group of `regions_per_record` regions of one image gives one multi-turn region-caption record
("Describe the region {box}." -> phrase) and one multi-turn REC record ("Output the coordinate of
{phrase}." -> box). REC turns skip phrases that occur more than once in the image (ambiguous).
All records go to `train` (Visual Genome has no standard split).
"""

from __future__ import annotations

import collections
import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax import spec
from tgg_jax.data.builders import base, checks, raw_entries, raw_json, records


@dataclasses.dataclass
class VisualGenomeConfig(tfds.core.BuilderConfig):
    """File names relative to raw_dir, and how many regions share one record."""

    regions_file: str = "region_descriptions.json"
    images_file: str = "image_data.json"
    image_root: str = "."
    regions_per_record: int = 10


class VisualGenome(base.RawDataBuilder):
    """Visual Genome v1.2 region descriptions as region captioning and REC."""

    name = "visual_genome"
    HOMEPAGE = "https://homes.cs.washington.edu/~ranjay/visualgenome/"
    BUILDER_CONFIGS = [VisualGenomeConfig(name="v1.2", description="Visual Genome v1.2 regions")]

    def _extra_features(self):
        return {"task": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        regions_path, images_path = raw_dir / config.regions_file, raw_dir / config.images_file
        images, regions = raw_json.read_json(images_path, list), raw_json.read_json(regions_path, list)
        self._image_root = self.image_folder(raw_dir, config.image_root)
        self._paths = {}
        for info in images:
            if isinstance(info, dict) and isinstance(info.get("url"), str):
                image_id = info.get("image_id", info.get("id"))
                self._paths[image_id] = "/".join(info["url"].rsplit("/", 2)[-2:])
        entries = [raw_entries.Entry(str(item.get("id") if isinstance(item, dict) else f"#{i}"),
                                str(regions_path), item)
                   for i, item in enumerate(regions)]
        return {"train": entries}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        item, source = entry.data, entry.source
        image_id = item["id"]
        if image_id not in self._paths:
            raise raw_entries.Skip("unreadable annotation", entry.id, source,
                              "image id not in image_data.json")
        image, width, height = self.images.read(self._image_root / self._paths[image_id], entry.id)
        regions = []
        for region in item["regions"]:
            region_id = f"{entry.id}/{region.get('region_id', '?')}"
            try:
                box = checks.check_box(
                    checks.xywh_to_xyxy([region["x"], region["y"], region["width"],
                                         region["height"]]), width, height, region_id, source)
                phrase = checks.clean_expression(
                    checks.clean_text(region["phrase"], region_id, source, "phrase"))
            except raw_entries.Skip as skip:
                yield skip
                continue
            except (KeyError, TypeError, ValueError) as e:
                yield raw_entries.Skip("unreadable annotation", region_id, source, repr(e))
                continue
            if not phrase:
                yield raw_entries.Skip("malformed conversation", region_id, source, "empty phrase")
                continue
            regions.append((phrase, checks.box_text(box, width, height)))
        counts = collections.Counter(phrase.lower() for phrase, _ in regions)
        size = max(1, self.builder_config.regions_per_record)
        for start in range(0, len(regions), size):
            group = regions[start:start + size]
            turns = {
                "caption": [(spec.region_caption_prompt(box), phrase)
                            for phrase, box in group],
                "rec": [(spec.rec_prompt(phrase), box)
                        for phrase, box in group if counts[phrase.lower()] == 1],
            }
            for task, pairs in turns.items():
                if pairs:
                    yield records.make_record(
                        record_id=f"{entry.id}_{start // size}_{task}", source="visual_genome",
                        conversations=[{"from": role, "value": text} for q, a in pairs
                                       for role, text in (("human", q), ("gpt", a))],
                        image=image, width=width, height=height, task=task)

