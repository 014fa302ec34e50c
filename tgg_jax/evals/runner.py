"""Sharded, resumable generation over eval splits, then one merge and one score (SPEC §4, §5).

Each JAX process answers the examples i of a split with i % process_count == process_index, in
host batches, appending one JSON line per example to WORKDIR/predictions/<split>.process_<i>.jsonl
and flushing after every batch. Rerunning a killed job with the same command reads each file
back, drops a torn last line, and answers only what is missing. Once every process is done,
process 0 merges the shards (every example exactly once, in source order) into <split>.jsonl,
scores all splits together with the evaluator, and writes metrics.json and the benchmark's
submission file.

A prediction is the record's ground-truth fields (JSON-ready; the image bytes become their sha1)
plus `source_index` (position in the split: the key), `id`, `split` (the split's label, e.g.
"refcoco_val") and `answer` (the model's text). The record's own `answer` field, if any, is kept
as `reference`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from tgg_jax.data.pipeline import conversations_of
from tgg_jax.evals.base import Evaluator, write_submission
from tgg_jax.inference import Question

INDEX = "source_index"
PREDICTIONS_DIR = "predictions"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
PROMPT_FROM = ("record", "evaluator")

AnswerFn = Callable[[Sequence[Question]], list[str]]


@dataclasses.dataclass(frozen=True)
class Split:
    """One split to evaluate: `name` names its files, `label` goes into each prediction's
    "split" field (REC reports per label), `source` gives records by index."""
    name: str
    label: str
    source: Any  # __len__ and __getitem__(int) -> record dict (a TFDS data source or a list)
    limit: int = 0  # first `limit` examples only; 0: all

    @property
    def num_examples(self) -> int:
        return len(self.source) if not self.limit else min(self.limit, len(self.source))


def plain(value: Any) -> Any:
    """A record value as JSON: bytes -> str, numpy arrays -> lists, numpy scalars -> numbers."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def ground_truth(record: Mapping[str, Any], turns: Sequence[dict]) -> dict[str, Any]:
    """The fields an evaluator may read, JSON-ready: every record field but the image bytes and
    the conversation, plus `question` (the last human turn) and `reference` (the record's own
    `answer`, else its last gpt turn) where the record has no such field, and `image` = sha1 of
    the image bytes (the image's identity: MME pairs its questions by image)."""
    out = {k: plain(v) for k, v in record.items() if k not in ("image", "conversations")}
    if "answer" in out:  # a prediction's "answer" is the model's text
        out["reference"] = out.pop("answer")
    humans = [t["value"] for t in turns if t["from"] == "human"]
    if humans:
        out.setdefault("question", humans[-1])
    if turns and turns[-1]["from"] == "gpt":
        out.setdefault("reference", turns[-1]["value"])
    image = record.get("image", b"")
    out["image"] = hashlib.sha1(bytes(image)).hexdigest() if image is not None and len(image) else ""
    return out


def question_for(record: Mapping[str, Any], index: int, split: Split, evaluator: Evaluator,
                 prompt_from: str) -> tuple[Question, dict[str, Any]]:
    """(what to ask, the prediction without its answer) for record `index` of `split`.

    prompt_from "record": the record's conversation up to its last human turn (builders write the
    SPEC §2 prompt there); "evaluator": `evaluator.prompt` of the ground-truth fields."""
    record_id = plain(record.get("id", index))
    where = f"{split.label} record {index} (id {record_id!r})"
    turns = conversations_of(record) if "conversations" in record else []
    example = ground_truth(record, turns)
    example.update({INDEX: index, "id": record_id, "split": split.label})
    if prompt_from == "record":
        asked = turns[:-1] if turns and turns[-1]["from"] == "gpt" else turns
        if not asked:
            raise ValueError(f"{where}: no human turn to ask (prompt_from='record'); use "
                             "prompt_from='evaluator' for records without a conversation")
    elif prompt_from == "evaluator":
        asked = evaluator.prompt(example)
    else:
        raise ValueError(f"prompt_from must be one of {PROMPT_FROM}, got {prompt_from!r}")
    image = record.get("image", b"")
    boxes = np.asarray(record.get("objects", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    return Question(list(asked), b"" if image is None else bytes(image), boxes, where), example


def shard_path(workdir: str, split: str, process_index: int) -> str:
    return os.path.join(workdir, PREDICTIONS_DIR, f"{split}.process_{process_index}.jsonl")


def read_predictions(path: str, *, repair: bool = False) -> list[dict]:
    """The predictions in a JSONL file ([] if it does not exist).

    A last line without its newline is what a killed writer leaves: with `repair` it is cut
    from the file (and answered again), otherwise it is an error. Any other unreadable line is
    an error naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        if not repair:
            raise ValueError(f"{path}: the last line is incomplete (a writer was killed)")
        logging.warning("%s: dropping a torn last line of %d bytes", path, len(data) - complete)
        with open(path, "r+b") as f:
            f.truncate(complete)
        data = data[:complete]
    predictions = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            prediction = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON prediction ({e})") from None
        if not isinstance(prediction, dict) or INDEX not in prediction:
            raise ValueError(f"{path}:{number}: a prediction needs a {INDEX!r} field")
        predictions.append(prediction)
    return predictions


def check_run(workdir: str, info: Mapping[str, Any], process_index: int, *, write: bool = True) -> None:
    """Predictions in a workdir must all come from one setup (checkpoint, data, prompt, decoding,
    process count): a rerun with a different one is refused instead of mixing answers.
    write=False only compares (before the checkpoint has loaded, nothing is written)."""
    info = json.loads(json.dumps(dict(info)))
    path = os.path.join(workdir, PREDICTIONS_DIR, RUN_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        changed = sorted(k for k in set(saved) | set(info) if saved.get(k) != info.get(k))
        if changed:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {info.get(k)!r}" for k in changed)
            raise ValueError(f"{workdir} holds predictions of a different run ({details}); "
                             "use a new --workdir, or rerun with the same setup to resume")
    elif process_index == 0 and write:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(info, f, indent=1)
        os.replace(path + ".tmp", path)  # other processes never read half a file


def predict_split(split: Split, evaluator: Evaluator, answer_fn: AnswerFn, workdir: str, *,
                  batch_size: int, prompt_from: str = "record", process_index: int = 0,
                  process_count: int = 1) -> int:
    """Answer this process's missing examples of `split`, a batch at a time, appending to its
    shard file. Returns how many were answered now."""
    path = shard_path(workdir, split.name, process_index)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = split.num_examples
    mine = range(process_index, n, process_count)
    done = collections.Counter(p[INDEX] for p in read_predictions(path, repair=True))
    stray = [i for i in done
             if not (isinstance(i, int) and 0 <= i < n and i % process_count == process_index)]
    repeated = [i for i, c in done.items() if c > 1]
    if stray or repeated:
        raise ValueError(f"{path}: holds examples this process does not own or holds twice "
                         f"({(stray + repeated)[:5]}); was the job started with another process count?")
    todo = [i for i in mine if i not in done]
    # The bar shows process 0's share; every process has the same amount of work.
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=split.label, unit="ex",
               disable=process_index != 0, dynamic_ncols=True)
    with open(path, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            asked = [question_for(split.source[i], i, split, evaluator, prompt_from) for i in chunk]
            answers = answer_fn([q for q, _ in asked])
            if len(answers) != len(chunk):
                raise RuntimeError(f"{len(answers)} answers for {len(chunk)} questions")
            f.write("".join(json.dumps({**example, "answer": text}) + "\n"
                            for (_, example), text in zip(asked, answers)))
            f.flush()
            os.fsync(f.fileno())  # a kill loses at most the batch being answered
            bar.update(len(chunk))
    bar.close()
    return len(todo)


def merge_split(workdir: str, split: Split, process_count: int) -> list[dict]:
    """Every process's predictions of `split` in source order; each example exactly once."""
    predictions = []
    for i in range(process_count):
        predictions += read_predictions(shard_path(workdir, split.name, i))
    n = split.num_examples
    counts = collections.Counter(p[INDEX] for p in predictions)
    repeated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(range(n)) - set(counts))
    extra = sorted(set(counts) - set(range(n)), key=str)
    if repeated or missing or extra:
        raise ValueError(f"{split.label}: {n} examples expected in {PREDICTIONS_DIR}/{split.name}."
                         f"process_*.jsonl; repeated {repeated[:5]}, missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    return sorted(predictions, key=lambda p: p[INDEX])


def write_jsonl(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def format_table(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "(no local metrics: see the submission file)"
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}s}  {v:10.4f}" for k, v in sorted(metrics.items()))


def run(evaluator: Evaluator, answer_fn: AnswerFn, splits: Sequence[Split], workdir: str, *,
        batch_size: int, prompt_from: str = "record", run_info: Mapping[str, Any] | None = None,
        process_index: int | None = None, process_count: int | None = None) -> dict | None:
    """Predict every split (this process's shard), wait for all processes, then on process 0 merge,
    score and write WORKDIR/metrics.json (+ submission). Returns the metrics on process 0, else
    None."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    workdir = os.path.abspath(workdir)
    check_run(workdir, {**(run_info or {}), "process_count": process_count}, process_index)
    for split in splits:
        answered = predict_split(split, evaluator, answer_fn, workdir, batch_size=batch_size,
                                 prompt_from=prompt_from, process_index=process_index,
                                 process_count=process_count)
        logging.info("%s: answered %d examples in process %d", split.label, answered, process_index)
    if process_count > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("tgg-eval: every shard written")
    if process_index != 0:
        return None
    predictions = []
    for split in splits:
        merged = merge_split(workdir, split, process_count)
        write_jsonl(os.path.join(workdir, PREDICTIONS_DIR, f"{split.name}.jsonl"), merged)
        predictions += merged
    metrics = evaluator.score(predictions)
    result = {"evaluator": evaluator.name, "examples": {s.label: s.num_examples for s in splits},
              "metrics": metrics, "run": dict(run_info or {})}
    with open(os.path.join(workdir, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=1)
    submission = evaluator.submission(predictions)
    if submission is not None:
        logging.info("wrote %s", write_submission(workdir, submission))
    print(f"{evaluator.name}: {len(predictions)} examples\n{format_table(metrics)}")
    return metrics
