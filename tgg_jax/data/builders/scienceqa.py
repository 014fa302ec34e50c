"""scienceqa: ScienceQA questions -> multiple-choice eval records (SPEC §4, SQA-IMG).

Raw layout under raw_dir: `problems.json` (`{pid: {"question", "choices", "answer" (index),
"hint", "image" ("image.png" or null), ...}}`), `pid_splits.json` (`{split: [pid, ...]}`) and
`images/{split}/{pid}/image.png`. Config "img" (the default, the SQA-IMG subset the paper
reports) keeps the questions with an image; "all" keeps every question (text-only ones get no
image). Records ask LLaVA-1.5's prompt (the evaluator's) and carry `question`, `choices`,
`label` (the answer's index), `hint`, `has_image`.
"""

from __future__ import annotations

import dataclasses
from string import ascii_uppercase

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tgg_jax import spec
from tgg_jax.data.builders import base, benchmark, checks, raw_entries, raw_json, records


@dataclasses.dataclass
class ScienceqaConfig(tfds.core.BuilderConfig):
    """Which splits of pid_splits.json to build, and whether text-only questions are kept."""

    splits: tuple[str, ...] = ("test",)
    image_only: bool = True


class Scienceqa(base.RawDataBuilder):
    """ScienceQA multiple-choice science questions (test)."""

    name = "scienceqa"
    HOMEPAGE = "https://scienceqa.github.io"
    BUILDER_CONFIGS = [
        ScienceqaConfig(name="img", image_only=True, description="questions with an image"),
        ScienceqaConfig(name="all", image_only=False, description="every question"),
    ]

    def _extra_features(self):
        return {"question": tfds.features.Text(),
                "choices": tfds.features.Sequence(tfds.features.Text()),
                "label": tfds.features.Scalar(dtype=np.int32),
                "hint": tfds.features.Text(),
                "has_image": tfds.features.Scalar(dtype=np.bool_)}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        self._image_dir = self.image_folder(raw_dir, "images")
        problems_path = raw_dir / "problems.json"
        problems = raw_json.read_json(problems_path, dict)
        pid_splits = raw_json.read_json(raw_dir / "pid_splits.json", dict)
        splits = {}
        for split in self.builder_config.splits:
            if split not in pid_splits:
                raise ValueError(f"{raw_dir / 'pid_splits.json'}: no split {split!r} "
                                 f"(has {sorted(pid_splits)})")
            entries = [raw_entries.Entry(str(pid), str(problems_path), problems.get(str(pid)))
                       for pid in pid_splits[split]]
            if self.builder_config.image_only:
                entries = [e for e in entries
                           if not isinstance(e.data, dict) or e.data.get("image")]
            splits[split] = entries
        return splits

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        record_id, problem = entry.id, entry.data
        if problem is None:
            raise raw_entries.Skip("unreadable annotation", record_id, entry.source,
                              "listed in pid_splits.json but not in problems.json")
        text = checks.clean_text(problem["question"], record_id, entry.source, "question")
        choices = [checks.clean_text(c, record_id, entry.source, "choice")
                   for c in problem["choices"]]
        label = int(problem["answer"])
        if not 0 <= label < len(choices):
            raise raw_entries.Skip("unreadable annotation", record_id, entry.source,
                              f"answer {label} outside {len(choices)} choices")
        hint = checks.clean_text(problem.get("hint") or "", record_id, entry.source, "hint")
        has_image = bool(problem.get("image"))
        image, width, height = b"", 0, 0
        if has_image:
            image, width, height = self.images.read(
                self._image_dir / split / record_id / problem["image"], record_id)
        yield records.make_record(
            record_id=record_id, source="scienceqa",
            conversations=benchmark.conversation(spec.scienceqa_prompt(text, choices, hint),
                                                 ascii_uppercase[label], record_id, entry.source,
                                                 has_image=has_image),
            image=image, width=width, height=height, question=text,
            choices=np.asarray(choices, dtype=object), label=label, hint=hint,
            has_image=has_image)
