"""pope: POPE object-hallucination questions -> yes/no records for evaluation (SPEC §4).

Raw layout under raw_dir: the POPE question files `{prefix}_pope_{category}.json` (or
`{prefix}/{prefix}_pope_{category}.json`, as POPE's output/ and LLaVA's eval/pope/ hold them) for category in
random / popular / adversarial (JSON lines `{"question_id", "image", "text", "label"}`, label
"yes"/"no") and the images they name under `image_dir` (COCO val2014 for the coco files).
One split per category file present; each record asks
"{text}\\nAnswer the question using a single word or phrase." (LLaVA-1.5's prompt) -> "Yes"/"No",
and carries `label` ("yes"/"no"), `category` and the bare `question` for the evaluator.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax import spec
from tgg_jax.data.builders import base, checks, raw_entries, raw_json, records

CATEGORIES = ("random", "popular", "adversarial")


@dataclasses.dataclass
class PopeConfig(tfds.core.BuilderConfig):
    """Question files are `{prefix}_pope_{category}.json` in raw_dir."""

    prefix: str = "coco"
    image_dir: str = "val2014"


class Pope(base.RawDataBuilder):
    """POPE yes/no object-existence questions (random / popular / adversarial)."""

    name = "pope"
    HOMEPAGE = "https://github.com/RUCAIBox/POPE"
    BUILDER_CONFIGS = [PopeConfig(name="coco", prefix="coco", image_dir="val2014",
                                  description="POPE on COCO val2014")]

    def _extra_features(self):
        return {"label": tfds.features.Text(), "category": tfds.features.Text(),
                "question": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        self._image_dir = self.image_folder(raw_dir, config.image_dir)
        splits = {}
        for category in CATEGORIES:
            # POPE's output/coco/ and LLaVA's eval/pope/coco/ hold them one folder down.
            name = f"{config.prefix}_pope_{category}.json"
            path = next((p for p in (raw_dir / name, raw_dir / config.prefix / name)
                         if p.exists()), raw_dir / name)
            if path.exists():
                splits[category] = raw_json.jsonl_entries(path, tag=category)
        return splits

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        category, line = entry.data
        question = raw_json.json_line(line, entry)
        record_id = str(question["question_id"])
        label = str(question["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise raw_entries.Skip("unreadable annotation", record_id, entry.source,
                              f"label {question['label']!r} is not yes/no")
        text = checks.clean_text(question["text"], record_id, entry.source, "text")
        image, width, height = self.images.read(self._image_dir / question["image"], record_id)
        yield records.make_record(
            record_id=record_id, source=f"pope_{self.builder_config.prefix}",
            conversations=[{"from": "human", "value": spec.short_answer_prompt(text)},
                           {"from": "gpt", "value": label.capitalize()}],
            image=image, width=width, height=height,
            label=label, category=category, question=text)
