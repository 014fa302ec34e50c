"""Eval-benchmark builders on tiny raw fixtures in each benchmark's released format.

Expected prompts are written out by hand (SPEC §2's short-answer format, LLaVA-1.5's
multiple-choice format). The builder's human turn and the evaluator's `prompt()` of the record's
fields are each checked against that literal text, so `prompt_from="record"` and `"evaluator"`
ask the same thing.
"""

import base64
import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tgg_jax import evals
from tgg_jax.data import builders
from tgg_jax.evals import runner

# SPEC §2: "{question}\nAnswer the question using a single word or phrase." (LLaVA-1.5's).
SHORT = "\nAnswer the question using a single word or phrase."
# LLaVA-1.5's multiple-choice instruction (ScienceQA, MMBench).
LETTER = "\nAnswer with the option's letter from the given choices directly."


def _image_bytes(size, fmt="JPEG", seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _write_image(path, size, fmt="JPEG", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_image_bytes(size, fmt, seed))
    return path.read_bytes()


def _build(name, tmp_path, raw, config=None):
    builder = builders.make_builder(name, data_dir=tmp_path / "data", raw_dir=raw, config=config)
    builder.download_and_prepare()
    return builder


def _read(builder, split):
    """{id: raw record} as tfds.data_source gives it (bytes strings, columnar turns)."""
    name = f"{builder.name}/{builder.builder_config.name}"
    source = tfds.data_source(name, split=split, data_dir=builder.data_dir_root)
    records = [source[i] for i in range(len(source))]
    return {r["id"].decode(): r for r in records}


def _turns(record):
    return [(t["from"], t["value"]) for t in builders.decode_record(record)["conversations"]]


def _check_evaluator_prompt(benchmark, record, text, image=True):
    """The evaluator's prompt of the record's fields is the hand-written `text` as one human
    turn, led by the image placeholder when the record has an image (SPEC §2's template)."""
    example = runner.ground_truth(record, builders.decode_record(record)["conversations"])
    value = f"<image>\n{text}" if image else text
    assert evals.get_evaluator(benchmark).prompt(example) == [{"from": "human", "value": value}]


# ---------------------------------------------------------------- vqav2


def test_vqav2(tmp_path):
    raw = tmp_path / "raw"
    val_image = _write_image(raw / "val2014/COCO_val2014_000000000042.jpg", (60, 40))
    _write_image(raw / "test2015/COCO_test2015_000000000007.jpg", (30, 50), seed=1)
    answers = ["2"] * 7 + ["two", "3", "2"]
    (raw / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": [
        {"image_id": 42, "question": "How many dogs are there?", "question_id": 420},
        {"image_id": 43, "question": "What color is it?", "question_id": 430},  # no image
    ]}))
    (raw / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": [
        {"question_id": 420, "image_id": 42, "answer_type": "number",
         "multiple_choice_answer": "2", "answers": [{"answer": a} for a in answers]},
        {"question_id": 430, "image_id": 43, "answer_type": "other",
         "multiple_choice_answer": "red", "answers": [{"answer": "red"}] * 10},
    ]}))
    (raw / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text(json.dumps(
        {"questions": [{"image_id": 7, "question": "Is it raining?", "question_id": 70}]}))
    builder = _build("vqav2", tmp_path, raw)
    assert set(builder.info.splits) == {"val", "testdev"}
    val = _read(builder, "val")
    assert list(val) == ["420"]
    record = val["420"]
    asked = "How many dogs are there?\nAnswer the question using a single word or phrase."
    assert _turns(record) == [("human", asked), ("gpt", "2")]
    assert [a.decode() for a in record["gt_answers"]] == answers
    assert record["answer_type"] == b"number" and record["image"] == val_image
    assert (record["width"], record["height"]) == (60, 40)
    assert dict(builder.skipped["val"]) == {"missing image": 1}
    _check_evaluator_prompt("vqav2", record, asked)
    testdev = _read(builder, "testdev")["70"]
    assert _turns(testdev) == [("human", "Is it raining?" + SHORT)]
    assert len(testdev["gt_answers"]) == 0 and (testdev["width"], testdev["height"]) == (30, 50)
    # The evaluator scores the record's fields: 10 annotators, "2" given by 8 -> accuracy 1.
    example = runner.ground_truth(record, [])
    assert evals.get_evaluator("vqav2").score([{**example, "answer": "Two"}]) == {
        "accuracy": 1.0, "number/accuracy": 1.0}


# ---------------------------------------------------------------- gqa


def test_gqa(tmp_path):
    raw = tmp_path / "raw"
    _write_image(raw / "images/n123.jpg", (50, 50))
    (raw / "testdev_balanced_questions.json").write_text(json.dumps({
        "201": {"imageId": "n123", "question": "Is the sky blue?", "answer": "yes",
                "fullAnswer": "Yes, the sky is blue."},
        "202": {"imageId": "n123", "question": "What is on the table?", "answer": "cup"},
        "203": {"imageId": "n999", "question": "Who is it?", "answer": "man"},
    }))
    builder = _build("gqa", tmp_path, raw)
    records = _read(builder, "testdev_balanced")
    assert sorted(records) == ["201", "202"]
    assert _turns(records["202"]) == [("human", "What is on the table?" + SHORT), ("gpt", "cup")]
    assert records["201"]["label"] == b"yes" and records["201"]["question"] == b"Is the sky blue?"
    assert dict(builder.skipped["testdev_balanced"]) == {"missing image": 1}
    assert _turns(records["201"]) == [("human", "Is the sky blue?" + SHORT), ("gpt", "yes")]
    _check_evaluator_prompt("gqa", records["201"], "Is the sky blue?" + SHORT)


# ---------------------------------------------------------------- scienceqa


def _scienceqa_fixture(raw):
    _write_image(raw / "images/test/1/image.png", (40, 30), fmt="PNG")
    problems = {
        "1": {"question": "Which is a mammal?", "choices": ["shark", "whale", "trout"],
              "answer": 1, "hint": "Look at the animals.", "image": "image.png", "split": "test"},
        "2": {"question": "Is ice a solid?", "choices": ["yes", "no"], "answer": 0, "hint": "",
              "image": None, "split": "test"},
        "3": {"question": "Which is red?", "choices": ["sky", "apple"], "answer": 1, "hint": "",
              "image": "image.png", "split": "test"},  # images/test/3/ is missing
        "9": {"question": "Train only", "choices": ["a", "b"], "answer": 0, "hint": "",
              "image": None, "split": "train"},
    }
    (raw / "problems.json").write_text(json.dumps(problems))
    (raw / "pid_splits.json").write_text(json.dumps({"train": ["9"], "test": ["1", "2", "3"]}))


def test_scienceqa_img_keeps_questions_with_images(tmp_path):
    raw = tmp_path / "raw"
    _scienceqa_fixture(raw)
    builder = _build("scienceqa", tmp_path, raw)
    assert builder.builder_config.name == "img" and set(builder.info.splits) == {"test"}
    records = _read(builder, "test")
    assert list(records) == ["1"]
    record = records["1"]
    asked = "Context: Look at the animals.\nWhich is a mammal?\nA. shark\nB. whale\nC. trout" + LETTER
    assert _turns(record) == [("human", asked), ("gpt", "B")]
    assert [c.decode() for c in record["choices"]] == ["shark", "whale", "trout"]
    assert (record["label"], bool(record["has_image"]), record["hint"]) == (
        1, True, b"Look at the animals.")
    assert dict(builder.skipped["test"]) == {"missing image": 1}
    _check_evaluator_prompt("scienceqa", record, asked)


def test_scienceqa_all_keeps_text_only_questions(tmp_path):
    raw = tmp_path / "raw"
    _scienceqa_fixture(raw)
    records = _read(_build("scienceqa", tmp_path, raw, config="all"), "test")
    assert sorted(records) == ["1", "2"]
    text_only = records["2"]
    asked = "Is ice a solid?\nA. yes\nB. no" + LETTER
    assert _turns(text_only) == [("human", asked), ("gpt", "A")]
    assert not text_only["has_image"] and text_only["image"] == b"" and text_only["width"] == 0
    # A text-only record has no image for the evaluator to put in front either.
    _check_evaluator_prompt("scienceqa", text_only, asked, image=False)


# ---------------------------------------------------------------- mme


def test_mme_reads_both_layouts(tmp_path):
    raw = tmp_path / "raw"
    root = raw / "MME_Benchmark_release_version"
    # Flat layout: the question file beside its image.
    _write_image(root / "existence/000001.jpg", (20, 20))
    (root / "existence/000001.txt").write_text(
        "Is there a dog in this image? Please answer yes or no.\tYes\n"
        "Is there a cat in this image? Please answer yes or no.\tNo\n")
    (root / "existence/000002.txt").write_text("Is there a car? Please answer yes or no.\tNo\n")
    # Nested layout: images/ and questions_answers_YN/.
    _write_image(root / "artwork/images/10002.png", (30, 20), fmt="PNG", seed=3)
    (root / "artwork/questions_answers_YN").mkdir()
    (root / "artwork/questions_answers_YN/10002.txt").write_bytes(  # CRLF, as some are released
        b"Is this artwork by Monet? Please answer yes or no.\tyes\r\n"
        b"Is this artwork by Goya? Please answer yes or no.\tmaybe\r\n")
    builder = _build("mme", tmp_path, raw)
    records = _read(builder, "test")
    assert sorted(records) == ["artwork/10002/1", "existence/000001/1", "existence/000001/2"]
    cat = records["existence/000001/2"]
    assert _turns(cat) == [("human", "Is there a cat in this image? Please answer yes or no."),
                           ("gpt", "No")]
    assert (cat["label"], cat["category"]) == (b"No", b"existence")
    monet = records["artwork/10002/1"]
    assert (monet["label"], monet["category"], monet["width"]) == (b"Yes", b"artwork", 30)
    assert dict(builder.skipped["test"]) == {"missing image": 1, "unreadable annotation": 1}
    _check_evaluator_prompt("mme", cat, "Is there a cat in this image? Please answer yes or no.")
    # The evaluator pairs an image's two questions by its bytes: one right, one wrong -> acc+ 0.
    preds = [{**runner.ground_truth(r, []), "answer": "Yes"}
             for r in (records["existence/000001/1"], cat)]
    scores = evals.get_evaluator("mme").score(preds)
    assert (scores["existence/acc"], scores["existence/acc_plus"]) == (50.0, 0.0)


# ---------------------------------------------------------------- mmbench


def _sheet(path, rows, columns):
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns)
                                     for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_mmbench(tmp_path):
    raw = tmp_path / "raw"
    image = base64.b64encode(_image_bytes((24, 16))).decode()
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    _sheet(raw / "mmbench_dev_20230712.tsv", [
        {"index": 5, "question": "What is shown?", "hint": "A photo.", "A": "cat", "B": "dog",
         "C": "cow", "answer": "B", "category": "object", "image": image},
        {"index": 1000005, "question": "What is shown?", "hint": "A photo.", "A": "cow",
         "B": "cat", "C": "dog", "answer": "C", "category": "object", "image": image},
        {"index": 6, "question": "Broken", "A": "x", "B": "y", "answer": "A",
         "image": "bm90IGFuIGltYWdl"},  # base64 of "not an image"
    ], columns)
    _sheet(raw / "mmbench_test_20230712.tsv", [
        {"index": 7, "question": "Which?", "hint": "nan", "A": "left", "B": "right", "C": "nan",
         "image": image},
    ], [c for c in columns if c != "answer"])
    builder = _build("mmbench", tmp_path, raw)
    dev = _read(builder, "dev")
    assert sorted(dev) == ["1000005", "5"]
    record = dev["5"]
    asked = "A photo.\nWhat is shown?\nA. cat\nB. dog\nC. cow" + LETTER
    assert _turns(record) == [("human", asked), ("gpt", "B")]
    assert (record["index"], record["label"], record["D"], record["category"]) == (
        5, b"B", b"", b"object")
    assert (record["width"], record["height"]) == (24, 16)
    assert dict(builder.skipped["dev"]) == {"corrupt image": 1}
    _check_evaluator_prompt("mmbench", record, asked)
    test = _read(builder, "test")["7"]
    assert _turns(test) == [("human", "Which?\nA. left\nB. right" + LETTER)]
    assert test["label"] == b""
    # Both circular copies answered with the right option's text -> circular accuracy 1.
    preds = [{**runner.ground_truth(r, []), "answer": "dog"} for r in dev.values()]
    assert evals.get_evaluator("mmbench").score(preds)["circular_accuracy"] == 1.0


# ---------------------------------------------------------------- llava_bench


def test_llava_bench(tmp_path):
    raw = tmp_path / "raw"
    _write_image(raw / "images/001.jpg", (32, 32))
    lines = [
        {"question_id": 0, "image": "001.jpg", "text": "Describe this photo in detail.",
         "category": "detail"},
        {"question_id": 1, "image": "001.jpg", "text": "What is unusual here?",
         "category": "complex"},
        {"question_id": 2, "image": "404.jpg", "text": "Why?", "category": "conv"},
    ]
    (raw / "questions.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines) + "{cut off\n\n")
    builder = _build("llava_bench", tmp_path, raw)
    records = _read(builder, "test")
    assert sorted(records) == ["0", "1"]
    assert _turns(records["1"]) == [("human", "What is unusual here?")]
    assert (records["1"]["question"], records["1"]["category"]) == (
        b"What is unusual here?", b"complex")
    assert dict(builder.skipped["test"]) == {"missing image": 1, "unreadable annotation": 1}
    assert _turns(records["0"]) == [("human", "Describe this photo in detail.")]
    _check_evaluator_prompt("llava_bench", records["0"], "Describe this photo in detail.")


def test_eval_builders_are_registered_under_the_eval_configs_names():
    from configs.eval import gqa, llava_bench, mmbench, mme, scienceqa, vqav2
    for module, arg in ((vqav2, "val"), (gqa, ""), (scienceqa, ""), (mme, ""), (mmbench, "dev"),
                        (llava_bench, "")):
        config = module.get_config(arg)
        assert config.dataset in builders.BUILDERS
        assert config.evaluator.name == config.dataset


@pytest.mark.parametrize("name", ["vqav2", "gqa", "scienceqa", "mme", "mmbench", "llava_bench"])
def test_missing_raw_files_name_the_path(tmp_path, name):
    (tmp_path / "raw").mkdir()
    with pytest.raises((FileNotFoundError, ValueError), match="raw"):
        _build(name, tmp_path, tmp_path / "raw")
