"""The evaluator protocol every benchmark follows (big_vision style: small classes from config).

A runner (`tgg-eval`) drives an evaluator in three steps:

1. `prompt(example)` -> the conversation turns to generate from (SPEC §2 prompts), as
   `[{"from": "human", "value": "<image>\\n..."}]`, the record format's conversation list;
2. it decodes greedily, gathers the outputs of every process, and builds one prediction per example:
   the example's ground-truth fields plus `"id"` and `"answer"` (the model's text);
3. `score(predictions)` -> `{metric: float}` on the complete list (pure Python, no device), and
   `submission(predictions)` -> `(filename, contents)` in the benchmark's standard upload format, or
   None where the benchmark has none; `write_submission` writes it by the filename's extension.

Rates are fractions in [0, 1]; MME's scores are its own points (100·acc + 100·acc+ per subtask).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

Prediction = Mapping[str, Any]
Submission = tuple[str, Any]


class Evaluator:
    """One benchmark: its prompt, its official metric and its submission file."""

    name: str = ""

    def prompt(self, example: Mapping[str, Any]) -> list[dict[str, str]]:
        """Conversation turns for the model (the human turn; the model writes the reply)."""
        raise NotImplementedError

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        """The benchmark's metrics over all predictions (every process's, gathered)."""
        raise NotImplementedError

    def submission(self, predictions: Sequence[Prediction]) -> Submission | None:
        """(filename, contents) in the benchmark's upload format, or None if it has none."""
        return None


def field(prediction: Prediction, key: str, benchmark: str) -> Any:
    """prediction[key], or an error naming the benchmark and the record's id."""
    try:
        return prediction[key]
    except KeyError:
        raise KeyError(f"{benchmark}: prediction {prediction.get('id', '?')!r} has no field "
                       f"{key!r} (has {sorted(prediction)})") from None


def write_submission(directory: str, submission: Submission) -> str:
    """Write (filename, contents) under directory by extension: .json, .jsonl (a list of
    objects, one a line), .tsv / .xlsx (a list of dicts, the first one's keys as header).
    Returns the path."""
    filename, contents = submission
    path = os.path.join(directory, filename)
    os.makedirs(directory, exist_ok=True)
    ext = os.path.splitext(filename)[1]
    if ext in (".tsv", ".xlsx") and not contents:
        raise ValueError(f"{filename}: no rows to write")
    if ext == ".json":
        with open(path, "w") as f:
            json.dump(contents, f)
    elif ext == ".jsonl":
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in contents)
    elif ext == ".tsv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(contents[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(contents)
    elif ext == ".xlsx":
        import openpyxl  # only MMBench's upload needs it (the `test` extra)

        book = openpyxl.Workbook()
        sheet = book.active
        header = list(contents[0])
        sheet.append(header)
        for row in contents:
            sheet.append([row[k] for k in header])
        book.save(path)
    else:
        raise ValueError(f"{filename}: unknown submission format {ext!r}")
    return path
