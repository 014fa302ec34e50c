"""mmbench: MMBench sheets -> multiple-choice eval records (SPEC §4).

Raw layout under raw_dir: the released TSV sheets `mmbench_dev_20230712.tsv` and
`mmbench_test_20230712.tsv` (columns index, question, hint, A, B, C, D, answer (dev only),
category, image (base64), ...). One split per sheet present, dev / test. The sheets already
hold the circular copies (index + k·1,000,000), so every row becomes one record, asking
LLaVA-1.5's prompt (the evaluator's) and carrying `index`, `question`, `hint`, `A`-`D` (""
when missing or "nan"), `category` and `label` (the answer letter; "" on test).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import sys

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tgg_jax import spec
from tgg_jax.data.builders import base, benchmark, checks, raw_entries, records

OPTIONS = ("A", "B", "C", "D")


@dataclasses.dataclass
class MmbenchConfig(tfds.core.BuilderConfig):
    """Sheet file names in raw_dir, per split."""

    dev_file: str = "mmbench_dev_20230712.tsv"
    test_file: str = "mmbench_test_20230712.tsv"


def read_sheet(path: epath.Path) -> list[dict[str, str]]:
    """The rows of a TSV sheet as {column: cell}; a sheet without the needed columns is fatal."""
    # Base64 image cells are far longer than csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 TSV sheet: {e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    missing = {"index", "question", "image", "A", "B"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}: not an MMBench sheet, no column(s) {sorted(missing)}")
    return list(reader)


class Mmbench(base.RawDataBuilder):
    """MMBench multiple-choice questions (dev with answers, test without)."""

    TAKES_IMAGE_ROOT = False  # images are inside the sheets

    name = "mmbench"
    HOMEPAGE = "https://github.com/open-compass/MMBench"
    BUILDER_CONFIGS = [MmbenchConfig(name="en", description="MMBench English, 20230712 sheets")]

    def _extra_features(self):
        return {"index": tfds.features.Scalar(dtype=np.int64),
                "question": tfds.features.Text(), "hint": tfds.features.Text(),
                **{letter: tfds.features.Text() for letter in OPTIONS},
                "category": tfds.features.Text(), "label": tfds.features.Text()}

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        splits = {}
        for split, filename in (("dev", config.dev_file), ("test", config.test_file)):
            path = raw_dir / filename
            if path.exists():
                splits[split] = [raw_entries.Entry(row.get("index") or f"row {n}", str(path), row)
                                 for n, row in enumerate(read_sheet(path), 2)]
        return splits

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        row, source = entry.data, entry.source
        record_id = str(int(row["index"]))

        def cell(column):
            value = checks.clean_text(row.get(column) or "", record_id, source, column)
            # pandas writes a missing hint or option as "nan" in some releases.
            return "" if value.lower() == "nan" else value

        fields = {"index": int(record_id), "question": cell("question"), "hint": cell("hint"),
                  **{letter: cell(letter) for letter in OPTIONS}}
        label = cell("answer").upper()
        if label and label not in [l for l in OPTIONS if fields[l]]:
            raise raw_entries.Skip("unreadable annotation", record_id, source,
                              f"answer {label!r} is not one of its options")
        # The options are the leading letters that have one (as the evaluator reads them).
        options = list(itertools.takewhile(bool, (fields[letter] for letter in OPTIONS)))
        question = spec.multiple_choice_prompt(fields["question"], options, context=fields["hint"])
        image, width, height = benchmark.decode_base64_image(row["image"] or "", record_id, source)
        yield records.make_record(
            record_id=record_id, source="mmbench",
            conversations=benchmark.conversation(question, label, record_id, source),
            image=image, width=width, height=height, category=cell("category"), label=label,
            **fields)
