"""VQAv2 (SPEC §4): the official answer normalisation and 10-annotator accuracy.

Normalisation (the official evaluation's rules): punctuation is dropped, or replaced by a space
when it is not next to a space and the text has no "digit,digit"; a period not followed by a
digit is dropped; then lowercase, number words become digits, articles go, and contractions
written without apostrophes get them back. Accuracy of an answer: for each of the 10 ways of
leaving one annotator out, min(#remaining annotators who gave it / 3, 1); averaged.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence

from tgg_jax import spec
from tgg_jax.evals.base import Evaluator, field

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")  # keeps decimals such as "2.5"
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_NUMBER_WORDS["none"] = "0"
_ARTICLES = frozenset(("a", "an", "the"))

# Contractions answers may spell without (some of) their apostrophes. Those whose bare spelling
# is an ordinary word (it's/its, we'll/well, I'll/ill, he'll/hell, she'll/shell, we're/were,
# she'd/shed, we'd/wed, let's/lets, I'd/id, I'm, I've) are left out, as the official table does.
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am "
    "mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't "
    "she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd "
    "someone'd've someone'll someone's something'd something'd've something'll that's there'd "
    "there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've "
    "we've weren't what'll what're what's what've when's where'd where's where've who'd "
    "who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all "
    "y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _apostrophe_dropped_spellings(word: str) -> list[str]:
    """Every spelling of word with a non-empty subset of its apostrophes removed."""
    parts = word.split("'")
    spellings = []
    for joins in itertools.product(("'", ""), repeat=len(parts) - 1):
        if all(joins):  # the canonical spelling itself
            continue
        spellings.append(parts[0] + "".join(j + p for j, p in zip(joins, parts[1:])))
    return spellings


_RESTORE_APOSTROPHES = {s: w for w in _CONTRACTIONS for s in _apostrophe_dropped_spellings(w)}


def process_punctuation(text: str) -> str:
    """The official punctuation rule (see the module docstring)."""
    glue = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        # Decided on the input text: "dog , cat" -> "dog  cat", "black/white" -> "black white".
        out = out.replace(p, "" if glue or p + " " in text or " " + p in text else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def process_digit_article(text: str) -> str:
    """Lowercase, number words -> digits, drop articles, restore contractions' apostrophes."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_RESTORE_APOSTROPHES.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares it ("Two dogs." -> "2 dogs")."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(answer: str, gt_answers: Sequence[str]) -> float:
    """The official accuracy of one answer against its (10) annotators' answers."""
    if not gt_answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    answer = normalize_answer(answer)
    gts = [g.replace("\n", " ").replace("\t", " ").strip() for g in gt_answers]
    if len(set(gts)) > 1:  # the official evaluator normalises annotators only when they disagree
        gts = [process_punctuation(g) for g in gts]
    matches = [g == answer for g in gts]
    total = sum(matches)
    # Leaving annotator i out leaves total - matches[i] annotators who gave this answer.
    return sum(min((total - m) / 3, 1.0) for m in matches) / len(matches)


class Vqav2Evaluator(Evaluator):
    """Examples: `question`, and where the split has public labels `gt_answers` (the 10
    annotators' answers) and optionally `answer_type` ("yes/no", "number", "other").
    Metrics: "accuracy" and "{answer_type}/accuracy"; none for test-dev (no labels)."""

    name = "vqav2"

    def prompt(self, example):
        question = field(example, "question", self.name)
        return spec.human_turn(spec.short_answer_prompt(question))

    def score(self, predictions):
        labelled = [p for p in predictions if p.get("gt_answers")]
        if not labelled:
            return {}
        if len(labelled) != len(predictions):
            raise ValueError(f"vqav2: {len(predictions) - len(labelled)} of {len(predictions)} "
                             "predictions have no gt_answers")
        by_type = defaultdict(list)
        for p in labelled:
            acc = vqa_accuracy(field(p, "answer", self.name), p["gt_answers"])
            by_type["all"].append(acc)
            if "answer_type" in p:
                by_type[p["answer_type"]].append(acc)
        scores = {"accuracy": sum(by_type.pop("all")) / len(labelled)}
        scores.update({f"{t}/accuracy": sum(v) / len(v) for t, v in sorted(by_type.items())})
        return scores

    def submission(self, predictions):
        """The EvalAI upload: [{"question_id": int, "answer"}], answers normalised. (EvalAI wants
        every test2015 question in a test-dev upload; that fill-in is not done here.)"""
        return ("vqav2_answers.json",
                [{"question_id": _question_id(field(p, "id", self.name)),
                  "answer": normalize_answer(field(p, "answer", self.name))} for p in predictions])


def _question_id(value):
    """Records store ids as text; EvalAI expects VQA question ids as integers."""
    return int(value) if str(value).isdigit() else value
