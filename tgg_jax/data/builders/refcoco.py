"""refcoco: RefCOCO / RefCOCO+ / RefCOCOg referring expressions -> REC and region-caption records.

Raw layout under raw_dir (that of the `refer` toolkit's data folder):
`{dataset}/refs({split_by}).p` (a Python 2 pickle: a list of refs
`{ref_id, ann_id, image_id, split, sentences: [{sent_id, sent, raw, ...}], ...}`, read with
tgg_jax.data.safe_pickle), `{dataset}/instances.json` (COCO format: images with file_name, and
annotations with bbox [x, y, w, h]), and COCO train2014 images under `image_dir`
(`images/mscoco/images/train2014`, or `train2014/`; elsewhere: --image_root).

Records: one per (ref, sentence). Every split gets REC — "Output the coordinate of {sent}." ->
the box on the padded square — with `gt_box` in original pixels and the `expression` for the
evaluator (SPEC §4); train also gets region captioning — "Describe the region {box}." -> the
sentence.
"""

from __future__ import annotations

import collections
import dataclasses

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from tgg_jax import spec
from tgg_jax.data import safe_pickle
from tgg_jax.data.builders import base, checks, raw_entries, raw_json, records


@dataclasses.dataclass
class RefCocoConfig(tfds.core.BuilderConfig):
    """dataset / split_by pick the refs file; eval_splits are the evaluation splits it holds."""

    dataset: str = "refcoco"
    split_by: str = "unc"
    eval_splits: tuple[str, ...] = ("val", "testA", "testB")
    image_dir: str = "images/mscoco/images/train2014"  # the refer toolkit's; or train2014/


class RefCoco(base.RawDataBuilder):
    """RefCOCO, RefCOCO+ (UNC splits) and RefCOCOg (UMD splits) on COCO train2014."""

    name = "refcoco"
    HOMEPAGE = "https://github.com/lichengunc/refer"
    BUILDER_CONFIGS = [
        RefCocoConfig(name="refcoco", dataset="refcoco", split_by="unc",
                      eval_splits=("val", "testA", "testB"), description="RefCOCO, UNC splits"),
        RefCocoConfig(name="refcoco+", dataset="refcoco+", split_by="unc",
                      eval_splits=("val", "testA", "testB"), description="RefCOCO+, UNC splits"),
        RefCocoConfig(name="refcocog", dataset="refcocog", split_by="umd",
                      eval_splits=("val", "test"), description="RefCOCOg, UMD splits"),
    ]

    def _extra_features(self):
        return {"task": tfds.features.Text(), "gt_box": records.box_feature(),
                "expression": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        refs_path = raw_dir / config.dataset / f"refs({config.split_by}).p"
        instances_path = raw_dir / config.dataset / "instances.json"
        refs = safe_pickle.load(refs_path)
        if not isinstance(refs, list):
            raise ValueError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
        instances = raw_json.read_json(instances_path, dict)
        try:
            self._images = {im["id"]: im for im in instances["images"]}
            self._boxes = {ann["id"]: ann["bbox"] for ann in instances["annotations"]}
        except (KeyError, TypeError) as e:
            raise ValueError(f"{instances_path}: not a COCO instances file: {e!r}") from e
        self._image_dir = self.image_folder(raw_dir, config.image_dir, "train2014")
        self._refs_source = str(refs_path)
        wanted = ("train", *config.eval_splits)
        splits = collections.defaultdict(list)
        for i, ref in enumerate(refs):
            split = ref.get("split") if isinstance(ref, dict) else None
            ref_id = str(ref.get("ref_id", f"#{i}")) if isinstance(ref, dict) else f"#{i}"
            if split in wanted:
                splits[split].append(raw_entries.Entry(ref_id, str(refs_path), ref))
        for split in wanted:
            if not splits[split]:
                logging.warning("%s: no refs of split %r in %s", self.name, split, refs_path)
        # Refs of one image together, so each image file is read once in a row.
        return {s: sorted(splits[s], key=lambda e: str(e.data.get("image_id")))
                for s in wanted if splits[s]}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        ref, source = entry.data, entry.source
        if ref.get("image_id") not in self._images:
            raise raw_entries.Skip("unreadable annotation", entry.id, source,
                              f"image_id {ref.get('image_id')} is not in instances.json")
        if ref.get("ann_id") not in self._boxes:
            raise raw_entries.Skip("unreadable annotation", entry.id, source,
                              f"ann_id {ref.get('ann_id')} is not in instances.json")
        image_info = self._images[ref["image_id"]]
        image, width, height = self.images.read(self._image_dir / image_info["file_name"], entry.id)
        box = checks.check_box(checks.xywh_to_xyxy(self._boxes[ref["ann_id"]]), width, height,
                               entry.id, source)
        target = checks.box_text(box, width, height)
        for sentence in ref["sentences"]:
            sent_id = f"{entry.id}_{sentence.get('sent_id', '?')}"
            text = sentence.get("sent") or sentence.get("raw")
            try:
                expression = checks.clean_expression(
                    checks.clean_text(text, sent_id, source, "sentence"))
            except raw_entries.Skip as skip:
                yield skip
                continue
            if not expression:
                yield raw_entries.Skip("malformed conversation", sent_id, source, "empty sentence")
                continue
            tasks = [("rec", sent_id, spec.rec_prompt(expression), target)]
            if split == "train":
                tasks.append(("caption", f"{sent_id}_caption",
                              spec.region_caption_prompt(target), expression))
            for task, record_id, question, answer in tasks:
                yield records.make_record(
                    record_id=record_id, source=self.builder_config.name,
                    conversations=[{"from": "human", "value": question},
                                   {"from": "gpt", "value": answer}],
                    image=image, width=width, height=height, task=task, gt_box=box,
                    expression=expression)
