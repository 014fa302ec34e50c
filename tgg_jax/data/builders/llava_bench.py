"""llava_bench: LLaVA-Bench (In-the-Wild) questions -> open-ended eval records (SPEC §4).

Raw layout under raw_dir: `questions.jsonl` (one `{"question_id", "image", "text", "category"}`
a line) and `images/{image}`. One split, test; records ask the question as given (the
evaluator's prompt) and carry `question` and `category`; the answers are judged by GPT-4 later.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax.data.builders import base, benchmark, checks, raw_entries, raw_json, records


@dataclasses.dataclass
class LlavaBenchConfig(tfds.core.BuilderConfig):
    """Questions file and image folder, relative to raw_dir."""

    questions_file: str = "questions.jsonl"
    image_dir: str = "images"


class LlavaBench(base.RawDataBuilder):
    """LLaVA-Bench (In-the-Wild): 60 open-ended questions on 24 images."""

    name = "llava_bench"
    HOMEPAGE = "https://huggingface.co/datasets/liuhaotian/llava-bench-in-the-wild"
    BUILDER_CONFIGS = [LlavaBenchConfig(name="in_the_wild",
                                        description="LLaVA-Bench (In-the-Wild)")]

    def _extra_features(self):
        return {"question": tfds.features.Text(), "category": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        self._image_dir = self.image_folder(raw_dir, config.image_dir)
        return {"test": raw_json.jsonl_entries(raw_dir / config.questions_file)}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        question = raw_json.json_line(entry.data, entry)
        record_id = str(question["question_id"])
        text = checks.clean_text(question["text"], record_id, entry.source, "text")
        image, width, height = self.images.read(self._image_dir / question["image"], record_id)
        yield records.make_record(
            record_id=record_id, source="llava_bench",
            conversations=benchmark.conversation(text, "", record_id, entry.source),
            image=image, width=width, height=height, question=text,
            category=str(question.get("category", "")))
