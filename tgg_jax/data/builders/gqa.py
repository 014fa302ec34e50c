"""gqa: GQA testdev-balanced questions -> short-answer eval records (SPEC §4).

Raw layout under raw_dir: `testdev_balanced_questions.json` (`{questionId: {"imageId",
"question", "answer", ...}}`) and `images/{imageId}.jpg`. One split, testdev_balanced; records
ask the evaluator's prompt and carry `question` and `label` (the answer).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax import spec
from tgg_jax.data.builders import base, benchmark, checks, raw_entries, raw_json, records


@dataclasses.dataclass
class GqaConfig(tfds.core.BuilderConfig):
    """Questions file and image folder, relative to raw_dir."""

    questions_file: str = "testdev_balanced_questions.json"
    image_dir: str = "images"
    split: str = "testdev_balanced"


class Gqa(base.RawDataBuilder):
    """GQA balanced questions (testdev by default)."""

    name = "gqa"
    HOMEPAGE = "https://cs.stanford.edu/people/dorarad/gqa"
    BUILDER_CONFIGS = [GqaConfig(name="default", description="GQA testdev-balanced")]

    def _extra_features(self):
        return {"question": tfds.features.Text(), "label": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        self._image_dir = self.image_folder(raw_dir, config.image_dir)
        path = raw_dir / config.questions_file
        questions = raw_json.read_json(path, dict)
        return {config.split: [raw_entries.Entry(str(qid), str(path), q)
                               for qid, q in questions.items()]}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        record_id, question = entry.id, entry.data
        text = checks.clean_text(question["question"], record_id, entry.source, "question")
        label = checks.clean_text(question["answer"], record_id, entry.source, "answer")
        image, width, height = self.images.read(self._image_dir / f"{question['imageId']}.jpg",
                                                record_id)
        yield records.make_record(
            record_id=record_id, source="gqa",
            conversations=benchmark.conversation(spec.short_answer_prompt(text), label,
                                                 record_id, entry.source),
            image=image, width=width, height=height, question=text, label=label)
