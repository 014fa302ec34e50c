"""mme: MME's yes/no questions -> eval records (SPEC §4).

Raw layout: raw_dir is (or contains) `MME_Benchmark_release_version/`, one folder per subtask
(existence, count, ..., code_reasoning). A subtask folder holds either its images with one
`{stem}.txt` beside each, or `images/` and `questions_answers_YN/{stem}.txt`; the release mixes
both layouts. Each text file has lines "question<TAB>Yes|No" (two per image). One split, test;
records ask the question as released (it ends "Please answer yes or no.") and carry `question`,
`label` ("Yes"/"No") and `category` (the subtask).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax.data.builders import base, benchmark, checks, raw_entries, records

RELEASE_DIR = "MME_Benchmark_release_version"
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
QUESTIONS_DIR = "questions_answers_YN"


@dataclasses.dataclass
class MmeConfig(tfds.core.BuilderConfig):
    """MME as released (no fields: the layout is fixed)."""


class Mme(base.RawDataBuilder):
    """MME perception and cognition yes/no questions (14 subtasks)."""

    TAKES_IMAGE_ROOT = False  # images sit beside their questions

    name = "mme"
    HOMEPAGE = "https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models"
    BUILDER_CONFIGS = [MmeConfig(name="default", description="MME release version")]

    def _extra_features(self):
        return {"question": tfds.features.Text(), "label": tfds.features.Text(),
                "category": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        root = raw_dir / RELEASE_DIR if (raw_dir / RELEASE_DIR).is_dir() else raw_dir
        entries = []
        for subtask in sorted(p for p in root.iterdir() if p.is_dir()):
            nested = (subtask / QUESTIONS_DIR).is_dir()
            text_dir = subtask / QUESTIONS_DIR if nested else subtask
            image_dir = subtask / "images" if nested else subtask
            for path in sorted(text_dir.glob("*.txt")):
                entries.append(raw_entries.Entry(f"{subtask.name}/{path.stem}", str(path),
                                            (subtask.name, path, image_dir)))
        return {"test": entries} if entries else {}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        category, path, image_dir = entry.data
        image_path = next((image_dir / (path.stem + s) for s in IMAGE_SUFFIXES
                           if (image_dir / (path.stem + s)).exists()), None)
        if image_path is None:
            raise raw_entries.Skip("missing image", entry.id, image_dir / f"{path.stem}.*")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as e:
            raise raw_entries.Skip("unreadable annotation", entry.id, path, str(e)) from None
        for n, line in enumerate((l for l in lines if l.strip()), 1):
            record_id = f"{entry.id}/{n}"
            question, sep, answer = line.rpartition("\t")
            label = answer.strip().capitalize()
            if not sep or label not in ("Yes", "No"):
                yield raw_entries.Skip("unreadable annotation", record_id, path,
                                  f"line {line!r} is not 'question<TAB>Yes|No'")
                continue
            text = checks.clean_text(question, record_id, path, "question")
            image, width, height = self.images.read(image_path, record_id)
            yield records.make_record(
                record_id=record_id, source="mme",
                conversations=benchmark.conversation(text, label, record_id, str(path)),
                image=image, width=width, height=height, question=text, label=label,
                category=category)
