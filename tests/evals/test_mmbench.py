"""MMBench scoring: option-letter extraction, circular copies, and LLaVA-1.5-13B's published
circular (67.69) and single-pass (75.43) accuracy reproduced from its released sheet."""

import math
import os
from collections import defaultdict

import pytest

from tgg_jax.evals import write_submission
from tgg_jax.evals.mmbench import (MmbenchEvaluator, circular_copies, extract_option,
                                   options_of)

OPTIONS = {"A": "dog", "B": "cat", "C": "red bird"}


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"),
    ("B. cat", "B"),
    ("(C)", "C"),
    ("[A]", "A"),
    ("The answer is A", "A"),
    ("A or B", None),              # two letters, and no single option text
    ("It is a cat", "B"),          # no letter token ("a" is lowercase): text match
    ("A cat", "A"),                # the letter rule comes first, even for the article "A"
    ("D", None),                   # not one of the choices
    ("a dog and a cat", None),     # two option texts
    ("The RED BIRD.", "C"),        # text match ignores case
])
def test_extract_option(answer, letter):
    assert extract_option(answer, OPTIONS) == letter


def test_options_of_stops_at_missing():
    assert options_of({"A": "x", "B": "y", "C": None, "D": "z"}) == {"A": "x", "B": "y"}
    assert options_of({"A": "x", "B": math.nan}) == {"A": "x"}


def test_circular_copies_by_hand():
    base = {"index": 7, "question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "label": "A"}
    copies = circular_copies(base)
    assert [(c["index"], c["A"], c["B"], c["C"], c["D"], c["label"]) for c in copies] == [
        (7, "a", "b", "c", "d", "A"),
        (1000007, "d", "a", "b", "c", "B"),
        (2000007, "c", "d", "a", "b", "C"),
        (3000007, "b", "c", "d", "a", "D"),
    ]
    with pytest.raises(ValueError, match="question 7 has label 'E'"):
        circular_copies({**base, "label": "E"})


def test_score_by_hand():
    def row(index, label, answer):
        return {"id": index, "index": index, "question": "q", "A": "x", "B": "y",
                "label": label, "answer": answer}

    predictions = [row(1, "A", "A"), row(1000001, "B", "B"),     # both copies right
                   row(2, "B", "B"), row(1000002, "A", "B"),     # second copy wrong
                   row(3, "A", "no idea"), row(1000003, "B", "B")]
    scores = MmbenchEvaluator().score(predictions)
    assert scores["circular_accuracy"] == pytest.approx(1 / 3)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["unextracted"] == pytest.approx(1 / 6)


def test_prompt():
    example = {"question": "What is it?", "hint": "A pet.", "A": "dog", "B": "cat", "C": None}
    assert MmbenchEvaluator().prompt(example) == [{
        "from": "human",
        "value": "<image>\nA pet.\nWhat is it?\nA. dog\nB. cat\n"
                 "Answer with the option's letter from the given choices directly."}]
    assert MmbenchEvaluator().prompt({**example, "hint": math.nan})[0]["value"].startswith(
        "<image>\nWhat is it?\nA. dog")


def _sheet_rows(testvectors_dir):
    openpyxl = pytest.importorskip("openpyxl")
    path = os.path.join(testvectors_dir, "mmbench", "llava-v1.5-13b.xlsx")
    sheet = openpyxl.load_workbook(path, read_only=True).active
    header, *rows = sheet.iter_rows(values_only=True)
    # The sheet's "answer" is the right letter; the model's text is "prediction".
    return [{**r, "label": r["answer"], "answer": r["prediction"], "id": r["index"]}
            for r in (dict(zip(header, row)) for row in rows)]


def test_reproduces_llava_v15_13b(testvectors_dir):
    predictions = _sheet_rows(testvectors_dir)
    scores = MmbenchEvaluator().score(predictions)
    assert len({p["index"] % 1_000_000 for p in predictions}) == 1176
    assert round(scores["circular_accuracy"] * 100, 2) == 67.69
    assert round(scores["accuracy"] * 100, 2) == 75.43


def test_circular_copies_match_released_sheet(testvectors_dir):
    rows = _sheet_rows(testvectors_dir)
    by_question = defaultdict(dict)
    for r in rows:
        by_question[r["index"] % 1_000_000][r["index"]] = r
    compared = 0
    for index, copies in by_question.items():
        base = copies[index]
        # Sheets keep an "all/none of the above" last option in place: compare plain rotations.
        if len(copies) != len(options_of(base)):
            continue
        for mine in circular_copies(base):
            released = copies[mine["index"]]
            assert {k: mine[k] for k in "ABCD" if k in options_of(base)} == \
                   {k: released[k] for k in "ABCD" if k in options_of(base)}
            assert mine["label"] == released["label"]
        compared += 1
    assert compared == 1123


def test_submission_xlsx(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    predictions = [{"id": 1000001, "index": 1000001, "question": "q", "A": "y", "B": "x",
                    "C": None, "label": "A", "answer": "A"},
                   {"id": 1, "index": 1, "question": "q", "A": "x", "B": "y", "C": math.nan,
                    "label": "A", "answer": "A."}]
    path = write_submission(str(tmp_path), MmbenchEvaluator().submission(predictions))
    rows = list(openpyxl.load_workbook(path).active.iter_rows(values_only=True))
    assert rows == [("index", "question", "A", "B", "C", "D", "prediction"),
                    (1, "q", "x", "y", None, None, "A."),
                    (1000001, "q", "y", "x", None, None, "A")]
