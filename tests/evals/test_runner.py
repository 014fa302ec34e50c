"""tgg-eval's runner: resuming a killed job, sharding over processes, merging, the configs.

The end-to-end tests run a random tiny TinyGroundingGPT on tgg_shapes records from an in-memory
source (tests/evals/fake_data.py) and compare a resumed or two-process run against an
uninterrupted single-process run; what the runner stores and scores is checked with hand-chosen
answers and their hand-computed scores.
"""

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.evals import fake_data
from tgg_jax import evals
from tgg_jax.evals import main as eval_main
from tgg_jax.evals import runner

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = os.path.join(REPO, "configs", "eval")
SOURCE = "tests.evals.fake_data:open_source"
OVERRIDES = {"source": SOURCE, "batch_size": 1, "max_new_tokens": 8, "pad_to_multiple": 128}


def load_config(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(f"eval_config_{name}", os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def shapes_config(**overrides):
    config = load_config("shapes", "tiny")
    config.update({**OVERRIDES, **overrides})
    return config


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fake_data.make_checkpoint(str(tmp_path_factory.mktemp("train")))[0]


@pytest.fixture(scope="module")
def answerer(checkpoint):
    return eval_main.build_answerer(shapes_config(), checkpoint)


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory):
    """An uninterrupted single-process run: (metrics.json, merged predictions)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    eval_main.evaluate(shapes_config(), checkpoint, workdir)
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics, read_jsonl(os.path.join(workdir, "predictions", "test.jsonl"))


class Killed(Exception):
    pass


class StopAfter:
    """The real answerer, killed when asked for batch number `batches` + 1; counts questions."""

    def __init__(self, answerer, batches=None):
        self.answerer, self.batches = answerer, batches
        self.batch_size = answerer.batch_size
        self.calls = self.questions = 0

    def __call__(self, questions):
        if self.calls == self.batches:
            raise Killed
        self.calls += 1
        self.questions += len(questions)
        return self.answerer(questions)


# Hand-chosen answers to the 20 fake test records (tasks cycle rec, caption, object, yes/no,
# describe; references in tests/evals/fake_data.py's tgg_shapes records), and what they score.
HAND_ANSWERS = {
    0: "[0.354, 0.552, 0.430, 0.628]",   # rec: the reference box (IoU ~1)
    1: "a large purple diamond",         # caption: right
    2: "[0.089, 0.672, 0.182, 0.766]",   # object "where": the reference box
    3: "Yes",                            # yes/no (reference Yes): right
    4: "A large red triangle.",          # describe: wrong
    5: "[0.900, 0.900, 1.000, 1.000]",   # rec: far off (IoU 0)
    6: "a small orange star",            # caption: wrong (size)
    7: "A yellow triangle.",             # object "which": right (case and full stop ignored)
    8: "no",                             # yes/no (reference No): right
    9: "A large orange circle, a medium purple circle and a medium red diamond.",  # describe: right
    10: "[0.130, 0.125, 0.208, 0.204]",  # rec: the reference box
    11: "a medium yellow star",          # caption: wrong (kind)
    12: "a red square",                  # object "which": wrong
    13: "Yes",                           # yes/no (reference Yes): right
    14: "four triangles",                # describe: wrong
    15: "a triangle",                    # rec: no box, counts as IoU 0
    16: "a medium blue star",            # caption: wrong (colour)
    17: "[0.000, 0.000, 0.100, 0.100]",  # object "where": far off
    18: "Yes",                           # yes/no (reference No): wrong
    19: "A small red square.",           # describe: wrong
}
HAND_SCORES = {"rec/acc@0.5": 2 / 4, "object_where/acc@0.5": 1 / 2, "object_which/exact": 1 / 2,
               "caption/exact": 1 / 4, "yesno/accuracy": 3 / 4, "describe/exact": 1 / 4}


class ScriptedAnswerer:
    """Answers each question with HAND_ANSWERS of the record it was asked about, found by the
    question's text and image bytes (no model): what the runner stores is then known by hand."""

    batch_size = 3  # 20 records: six full batches and a partial one

    def __init__(self):
        source = fake_data.open_source("", "test", "")
        self.by_question = {(source[i]["conversations"]["value"][0].decode(), bytes(source[i]["image"])): a
                            for i, a in HAND_ANSWERS.items()}

    def __call__(self, questions):
        return [self.by_question[(q.turns[-1]["value"], q.image)] for q in questions]


def test_predictions_hold_each_records_answer_and_ground_truth(tmp_path):
    """Each merged prediction is the answer given to that record's question, with the record's
    ground truth beside it; the metrics are the hand-computed scores of those answers."""
    checkpoint = tmp_path / "checkpoint"  # must exist; the scripted answerer never reads it
    checkpoint.mkdir()
    workdir = tmp_path / "eval"
    metrics = eval_main.evaluate(shapes_config(), str(checkpoint), str(workdir),
                                 answerer=ScriptedAnswerer())
    predictions = read_jsonl(os.path.join(str(workdir), "predictions", "test.jsonl"))
    assert [p[runner.INDEX] for p in predictions] == list(range(fake_data.NUM_EXAMPLES))
    assert [p["answer"] for p in predictions] == [HAND_ANSWERS[i] for i in range(fake_data.NUM_EXAMPLES)]
    for i in (0, 2, 7):  # a REC, an <object> and a caption question
        record = fake_data.open_source("", "test", "")[i]
        p = predictions[i]
        assert p["id"] == f"tgg_shapes-test-{i:06d}" and p["split"] == "tgg_shapes_test"
        assert p["question"] == record["conversations"]["value"][0].decode()
        assert p["reference"] == record["conversations"]["value"][1].decode()
        assert p["gt_box"] == record["gt_box"].tolist() and p["width"] == int(record["width"])
        assert p["image"] == hashlib.sha1(record["image"]).hexdigest()
    objects = fake_data.open_source("", "test", "")[2]["objects"]
    assert predictions[2]["objects"] == np.asarray(objects).tolist() and len(objects) == 1
    assert {k: metrics[k] for k in HAND_SCORES} == HAND_SCORES
    # Two reference boxes (IoU just under 1 from the answer's 3 decimals) and two misses.
    assert metrics["rec/mean_iou"] == pytest.approx(0.5, abs=0.015) and metrics["rec/mean_iou"] <= 0.5


def test_killed_run_resumes_to_the_same_result(reference, answerer, checkpoint, tmp_path):
    ref_metrics, ref_predictions = reference
    workdir = str(tmp_path)
    shard = runner.shard_path(workdir, "test", 0)
    batch = answerer.batch_size  # 8 devices x 1

    with pytest.raises(Killed):
        eval_main.evaluate(shapes_config(), checkpoint, workdir, answerer=StopAfter(answerer, 2))
    assert len(read_jsonl(shard)) == 2 * batch  # flushed after every batch
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    # Killed while writing line 13: 12 complete lines and a torn one.
    with open(shard, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(shard, "wb") as f:
        f.write(b"".join(lines[:12]) + lines[12][: len(lines[12]) // 2])

    resumed = StopAfter(answerer)
    metrics = eval_main.evaluate(shapes_config(), checkpoint, workdir, answerer=resumed)
    assert resumed.questions == fake_data.NUM_EXAMPLES - 12  # only what was missing
    indices = [p[runner.INDEX] for p in read_jsonl(shard)]
    assert sorted(indices) == list(range(fake_data.NUM_EXAMPLES))  # no duplicate, none dropped
    assert read_jsonl(os.path.join(workdir, "predictions", "test.jsonl")) == ref_predictions
    assert metrics == ref_metrics["metrics"]
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["metrics"] == ref_metrics["metrics"]

    # A finished run rerun answers nothing and scores the same.
    again = StopAfter(answerer)
    assert eval_main.evaluate(shapes_config(), checkpoint, workdir, answerer=again) == metrics
    assert again.questions == 0


def test_rerun_with_another_setup_is_refused(answerer, checkpoint, tmp_path):
    eval_main.evaluate(shapes_config(limit=3), checkpoint, str(tmp_path), answerer=answerer)
    with pytest.raises(ValueError, match=r"different run \(limit: 3 -> 4\)"):
        eval_main.evaluate(shapes_config(limit=4), checkpoint, str(tmp_path), answerer=answerer)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(reference, checkpoint, tmp_path):
    """Two jax.distributed CPU processes (8 devices each, like this one) shard the split and give
    the single-process predictions and metrics."""
    ref_metrics, ref_predictions = reference
    workdir = str(tmp_path)
    port = _free_port()
    env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest", "PYTHONPATH": REPO}
    overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tgg_jax.evals.main", f"--config={CONFIGS}/shapes.py:tiny", *overrides,
         f"--checkpoint={checkpoint}", f"--workdir={workdir}", "--cpu_devices=8",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    shards = [read_jsonl(runner.shard_path(workdir, "test", i)) for i in range(2)]
    assert [p[runner.INDEX] % 2 for p in shards[0]] == [0] * 10
    assert [p[runner.INDEX] % 2 for p in shards[1]] == [1] * 10
    assert read_jsonl(os.path.join(workdir, "predictions", "test.jsonl")) == ref_predictions
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["metrics"] == ref_metrics["metrics"]
    assert "yesno/accuracy" in outputs[0]  # process 0 prints the table


# --- pieces, without a model ---------------------------------------------------------------

def test_read_predictions_drops_only_a_torn_last_line(tmp_path):
    path = str(tmp_path / "x.process_0.jsonl")
    with open(path, "w") as f:
        f.write('{"source_index": 0, "answer": "a"}\n{"source_index": 2, "answer": "b"}\n{"source_in')
    with pytest.raises(ValueError, match="last line is incomplete"):
        runner.read_predictions(path)
    assert [p["source_index"] for p in runner.read_predictions(path, repair=True)] == [0, 2]
    with open(path) as f:
        assert f.read().endswith('"b"}\n')  # the torn bytes are gone from the file
    with open(path, "a") as f:
        f.write("not json\n")
    with pytest.raises(ValueError, match=r"x.process_0.jsonl:3: not a JSON prediction"):
        runner.read_predictions(path, repair=True)


def _write_shards(workdir, shards):
    os.makedirs(os.path.join(workdir, runner.PREDICTIONS_DIR), exist_ok=True)
    for i, indices in enumerate(shards):
        runner.write_jsonl(runner.shard_path(workdir, "val", i),
                           [{runner.INDEX: j, "answer": str(j)} for j in indices])


def test_merge_checks_every_example_exactly_once(tmp_path):
    split = runner.Split("val", "x_val", source=list(range(5)))
    _write_shards(str(tmp_path), [[0, 2, 4], [1, 3]])
    assert [p["answer"] for p in runner.merge_split(str(tmp_path), split, 2)] == list("01234")
    _write_shards(str(tmp_path / "a"), [[0, 2, 4], [1]])
    with pytest.raises(ValueError, match=r"missing \[3\]"):
        runner.merge_split(str(tmp_path / "a"), split, 2)
    _write_shards(str(tmp_path / "b"), [[0, 2, 4, 2], [1, 3]])
    with pytest.raises(ValueError, match=r"repeated \[2\]"):
        runner.merge_split(str(tmp_path / "b"), split, 2)


def test_a_shard_of_another_process_count_is_refused(tmp_path):
    _write_shards(str(tmp_path), [[0, 1, 2]])  # written by a 1-process run
    split = runner.Split("val", "x_val", source=[{}] * 4)
    with pytest.raises(ValueError, match="another process count"):
        runner.predict_split(split, evals.get_evaluator("gqa"), lambda qs: [], str(tmp_path),
                             batch_size=2, process_index=0, process_count=2)


def test_questions_from_the_record_or_the_evaluator():
    asked = "Is there a dog?\nAnswer the question using a single word or phrase."
    record = {"id": b"q7", "image": b"\x89PNG...", "objects": np.zeros((0, 4), np.float32),
              "conversations": {"from": [b"human", b"gpt"], "value": [asked.encode(), b"Yes"]},
              "label": b"yes", "category": b"random", "width": np.int32(4)}
    split = runner.Split("random", "pope_random", source=[record])
    pope = evals.get_evaluator("pope")
    question, example = runner.question_for(record, 0, split, pope, "record")
    assert question.turns == [{"from": "human", "value": asked}]
    assert question.image == b"\x89PNG..." and question.boxes.shape == (0, 4)
    assert example == {"id": "q7", "source_index": 0, "split": "pope_random", "label": "yes",
                       "category": "random", "width": 4, "objects": [],
                       "question": asked,
                       "reference": "Yes", "image": hashlib.sha1(b"\x89PNG...").hexdigest()}
    # Fields only: the evaluator writes the prompt (LLaVA-1.5's short-answer format).
    bare = {"id": b"q8", "image": b"", "question": b"Is there a cat?", "label": b"no", "category": b"popular"}
    question, example = runner.question_for(bare, 3, split, pope, "evaluator")
    assert question.turns == [{"from": "human", "value": "<image>\nIs there a cat?\n"
                               "Answer the question using a single word or phrase."}]
    assert example["image"] == "" and example[runner.INDEX] == 3
    with pytest.raises(ValueError, match=r"pope_random record 3 \(id 'q8'\): no human turn"):
        runner.question_for(bare, 3, split, pope, "record")


def test_tgg_shapes_answers_score_like_final_eval():
    """The registered tgg_shapes evaluator: a right box and a wrong caption, scored by hand."""
    evaluator = evals.get_evaluator("tgg_shapes")
    rec = {"task": "rec", "question": "Output the coordinate of the red circle.",
           "reference": "[0.000, 0.250, 0.500, 0.750]", "gt_box": [0, 0, 100, 100],
           "width": 200, "height": 100}  # square 200: y offset 50 -> pixels (0, 0, 100, 100)
    caption = {**rec, "task": "caption", "question": "Describe the region [0, 0, 1, 1].",
               "reference": "a small red circle"}
    scores = evaluator.score([{**rec, "answer": "[0.000, 0.250, 0.500, 0.750]"},
                              {**caption, "answer": "a large blue star"}])
    assert scores["rec/acc@0.5"] == 1.0 and scores["rec/mean_iou"] == pytest.approx(1.0)
    assert scores["caption/exact"] == 0.0
    assert scores["constant_baseline/caption/exact"] == 1.0  # the majority caption is this one


@pytest.mark.parametrize("name", ["rec", "pope", "vqav2", "gqa", "scienceqa", "mme", "mmbench",
                                  "llava_bench", "shapes"])
def test_every_benchmark_config_builds_its_evaluator(name, monkeypatch):
    monkeypatch.syspath_prepend(REPO)
    config = load_config(name)
    assert evals.from_config(config.evaluator.to_dict()).name == config.evaluator.name
    assert config.splits and config.prompt_from in runner.PROMPT_FROM


def test_rec_config_arguments(monkeypatch):
    monkeypatch.syspath_prepend(REPO)
    assert load_config("rec", "refcocog").splits == ("val", "test")
    config = load_config("rec", "refcoco+:testA,testB")
    assert (config.dataset, config.splits, config.name) == ("refcoco/refcoco+", ("testA", "testB"),
                                                            "refcoco+")
    with pytest.raises(ValueError, match="refcoco, refcoco\\+, refcocog"):
        load_config("rec", "refclef")
