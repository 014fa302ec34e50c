"""vqav2: VQAv2 questions -> short-answer eval records (SPEC §4).

Raw layout under raw_dir: `v2_OpenEnded_mscoco_{val2014,test-dev2015,test2015}_questions.json`
(`{"questions": [{"question_id", "image_id", "question"}]}`), for val also
`v2_mscoco_val2014_annotations.json` (`{"annotations": [{"question_id", "answers": [{"answer"}],
"multiple_choice_answer", "answer_type"}]}`), and the COCO images
`val2014/COCO_val2014_{id:012}.jpg`, `test2015/COCO_test2015_{id:012}.jpg` (test-dev's images
are in test2015).
Splits val / testdev / test, one per questions file present. Records ask the evaluator's prompt
and carry `question`, `gt_answers` (the 10 annotators' answers; empty for test), `answer_type`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tgg_jax import spec
from tgg_jax.data.builders import base, benchmark, checks, raw_entries, raw_json, records

# split -> (questions file's subset name, image folder)
SPLITS = {"val": ("val2014", "val2014"), "testdev": ("test-dev2015", "test2015"),
          "test": ("test2015", "test2015")}
ANNOTATIONS = {"val": "v2_mscoco_val2014_annotations.json"}


@dataclasses.dataclass
class Vqav2Config(tfds.core.BuilderConfig):
    """Questions files are `v2_OpenEnded_mscoco_{subset}_questions.json` in raw_dir."""


class Vqav2(base.RawDataBuilder):
    """VQAv2 open-ended questions (val with labels; test-dev / test without)."""

    TAKES_IMAGE_ROOT = False  # val2014/ and test2015/ under raw_dir

    name = "vqav2"
    HOMEPAGE = "https://visualqa.org"
    BUILDER_CONFIGS = [Vqav2Config(name="default", description="VQAv2 on COCO")]

    def _extra_features(self):
        return {"question": tfds.features.Text(),
                "gt_answers": tfds.features.Sequence(tfds.features.Text()),
                "answer_type": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        self._raw_dir = raw_dir
        splits = {}
        for split, (subset, image_dir) in SPLITS.items():
            path = raw_dir / f"v2_OpenEnded_mscoco_{subset}_questions.json"
            if not path.exists():
                continue
            questions = raw_json.read_json(path, dict)["questions"]
            labels = {}
            if split in ANNOTATIONS:
                labels = {a["question_id"]: a for a in raw_json.read_json(
                    raw_dir / ANNOTATIONS[split], dict)["annotations"]}
            splits[split] = [
                raw_entries.Entry(str(q.get("question_id")), str(path),
                             (q, labels.get(q.get("question_id")), image_dir))
                for q in questions]
        return splits

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        question, label, image_dir = entry.data
        record_id = str(question["question_id"])
        text = checks.clean_text(question["question"], record_id, entry.source, "question")
        if split in ANNOTATIONS and label is None:
            raise raw_entries.Skip("missing annotation", record_id, entry.source)
        gt_answers = [str(a["answer"]) for a in label["answers"]] if label else []
        # COCO names images after their folder: val2014/COCO_val2014_000000000042.jpg.
        path = self._raw_dir / image_dir / f"COCO_{image_dir}_{int(question['image_id']):012d}.jpg"
        image, width, height = self.images.read(path, record_id)
        reference = str(label["multiple_choice_answer"]) if label else ""
        yield records.make_record(
            record_id=record_id, source="vqav2",
            conversations=benchmark.conversation(spec.short_answer_prompt(text), reference,
                                                 record_id, entry.source),
            image=image, width=width, height=height, question=text,
            gt_answers=np.asarray(gt_answers, dtype=object),
            answer_type=str(label.get("answer_type", "")) if label else "")
