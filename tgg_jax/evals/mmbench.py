"""MMBench (SPEC §4): multiple-choice questions scored with circular evaluation — every question
is asked once per rotation of its options (copy k has index + k·1,000,000) and counts only if every
copy is answered right. The option letter comes from the official exact-matching extractor."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from string import ascii_uppercase
from typing import Any

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field

COPY_STRIDE = 1_000_000  # circular copy k of question i has index i + k * COPY_STRIDE
_SEPARATORS = ".()[],:;!*#{}"


def _present(value: Any) -> bool:
    # Missing options are None (openpyxl), NaN (pandas) or empty in the released sheets.
    if isinstance(value, float) and math.isnan(value):
        return False
    return value is not None and value != ""


def options_of(example: Mapping[str, Any]) -> dict[str, str]:
    """{letter: option text} for the leading letters A, B, ... that the example has."""
    options = {}
    for letter in ascii_uppercase:
        if not _present(example.get(letter)):
            break
        options[letter] = str(example[letter])
    return options


def extract_option(answer: str, options: Mapping[str, str]) -> str | None:
    """The chosen letter: the only option letter among the answer's tokens once `.()[],:;!*#{}`
    become spaces; else the only option whose text (lowercased) the answer contains; else None."""
    text = str(answer)
    for ch in _SEPARATORS:
        text = text.replace(ch, " ")
    tokens = set(text.split())
    letters = [letter for letter in options if letter in tokens]
    if len(letters) == 1:
        return letters[0]
    lowered = str(answer).lower()
    matches = [letter for letter, option in options.items() if option.lower() in lowered]
    return matches[0] if len(matches) == 1 else None


def circular_copies(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The example and its n - 1 rotations: in copy k the option at letter j is the original one
    at j - k (mod n), the label moves along, and the index gains k·COPY_STRIDE.

    The released MMBench sheets already hold their circular copies (some keep an "all/none of the
    above" last option in place); prefer them where available."""
    options = options_of(example)
    letters = list(options)
    texts = list(options.values())
    label = field(example, "label", "mmbench")
    if label not in letters:
        raise ValueError(f"mmbench: question {example.get('index', '?')!r} has label {label!r}, "
                         f"not one of its options {letters}")
    copies = []
    for k in range(len(letters)):
        copy = dict(example)
        copy.update({letters[j]: texts[(j - k) % len(letters)] for j in range(len(letters))})
        copy["label"] = letters[(letters.index(label) + k) % len(letters)]
        copy["index"] = field(example, "index", "mmbench") + k * COPY_STRIDE
        copies.append(copy)
    return copies


class MmbenchEvaluator(Evaluator):
    """Examples: `index`, `question`, optional `hint`, options under `A`, `B`, ... (missing ones
    None/NaN), `label` (the right letter). Metrics: "circular_accuracy" (questions whose every
    copy is right), "accuracy" (single pass: copy 0 only), "unextracted" (share of answers with
    no letter)."""

    name = "mmbench"

    def prompt(self, example):
        hint = example.get("hint")
        return spec.human_turn(spec.multiple_choice_prompt(
            field(example, "question", self.name), list(options_of(example).values()),
            context=str(hint) if _present(hint) else ""))

    def choice(self, prediction) -> str | None:
        """The letter a prediction chose, or None."""
        return extract_option(field(prediction, "answer", self.name), options_of(prediction))

    def score(self, predictions):
        if not predictions:
            return {}
        copies_right = defaultdict(list)  # question index -> [copy right?]
        single = []
        unextracted = 0
        for p in predictions:
            choice = self.choice(p)
            unextracted += choice is None
            right = choice == field(p, "label", self.name)
            index = int(field(p, "index", self.name))
            copies_right[index % COPY_STRIDE].append(right)
            if index < COPY_STRIDE:
                single.append(right)
        scores = {
            "circular_accuracy": sum(all(c) for c in copies_right.values()) / len(copies_right),
            "unextracted": unextracted / len(predictions),
        }
        if single:
            scores["accuracy"] = sum(single) / len(single)
        return scores

    def submission(self, predictions):
        """MMBench's upload sheet: index, question, options, and the model's text as prediction."""
        rows = []
        for p in sorted(predictions, key=lambda p: int(field(p, "index", self.name))):
            row = {"index": p["index"], "question": field(p, "question", self.name)}
            row.update({letter: p.get(letter) if _present(p.get(letter)) else None
                        for letter in "ABCD"})
            row["prediction"] = field(p, "answer", self.name)
            rows.append(row)
        return ("mmbench_submission.xlsx", rows)
