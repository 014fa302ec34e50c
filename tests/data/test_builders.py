"""TFDS builders on tiny raw fixtures written in tmp_path, in each dataset's real format.

Expected box texts are worked by hand: a W x H image is padded to max(W, H) and the shorter side
shifts by (max - side) // 2, e.g. box [20, 10, 60, 50] in 200 x 100 -> y + 50, / 200 ->
[0.100, 0.300, 0.300, 0.500].
"""

import importlib.util
import io
import json
import logging
import os
import pickle
import sys

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tgg_jax.data import builders, cli
from tgg_jax.data.builders import tgg_shapes

# Hand-worked boxes (see the module docstring).
BOX_WIDE = "[0.100, 0.300, 0.300, 0.500]"  # [20, 10, 60, 50] in 200 x 100
BOX_WIDE_RIGHT = "[0.500, 0.250, 0.750, 0.750]"  # [100, 0, 150, 100] in 200 x 100
BOX_TALL = "[0.233, 0.200, 0.567, 0.600]"  # [10, 30, 60, 90] in 100 x 150: x + 25, / 150


# ---------------------------------------------------------------- raw fixture helpers


def _write_image(path, size, fmt="JPEG", seed=0):
    """A noisy image (so a JPEG has real scan data to truncate); returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _write_bad_images(folder):
    """corrupt.jpg (not an image), truncated.jpg (a JPEG cut in half), empty.jpg (0 bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.jpg").write_bytes(b"this is not an image" * 20)
    good = _write_image(folder / "whole.jpg", (64, 64), seed=9)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")


def _build(name, tmp_path, raw_dir, config=None, overrides=None):
    builder = builders.make_builder(name, data_dir=tmp_path / "data", raw_dir=raw_dir,
                                    config=config, overrides=overrides)
    builder.download_and_prepare()
    return builder


def _read(builder, split):
    """{id: decoded record} of a split, read back through tfds.data_source."""
    name = f"{builder.name}/{builder.builder_config.name}"
    source = tfds.data_source(name, split=split, data_dir=builder.data_dir_root)
    records = [builders.decode_record(source[i]) for i in range(len(source))]
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records)
    return by_id


def _turns(record):
    return [(t["from"], t["value"]) for t in record["conversations"]]


def _skips(builder, split):
    return dict(builder.skipped[split])


# ---------------------------------------------------------------- llava_conversations


def _llava_fixture(raw):
    images = raw / "imgs"
    wide = _write_image(images / "wide.jpg", (200, 100))
    tall = _write_image(images / "tall.png", (120, 160), fmt="PNG")
    _write_bad_images(images)
    qa = [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "Noise."}]
    items = [
        {"id": "wide", "image": "wide.jpg", "conversations": qa + [
            {"from": "human", "value": "Where is the block?"},
            {"from": "gpt", "value": BOX_WIDE}]},
        {"id": "tall", "image": "tall.png", "objects": [[10, 20, 70, 100]], "conversations": [
            {"from": "human", "value": "What is in <object>?\n<image>"},
            {"from": "gpt", "value": "A box."}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Hello"},
                                         {"from": "gpt", "value": "Hi"}]},
        {"id": "corrupt", "image": "corrupt.jpg", "conversations": qa},
        {"id": "truncated", "image": "truncated.jpg", "conversations": qa},
        {"id": "missing", "image": "missing.jpg", "conversations": qa},
        {"id": "empty", "image": "empty.jpg", "conversations": qa},
        {"id": "gpt_first", "image": "wide.jpg", "conversations": qa[::-1]},
        {"id": "no_turns", "image": "wide.jpg", "conversations": []},
        {"id": "object_count", "image": "wide.jpg", "objects": [[1, 1, 5, 5]], "conversations": qa},
        {"id": "bad_box", "image": "wide.jpg", "objects": [[50, 10, 20, 40]], "conversations": [
            {"from": "human", "value": "What is <object>?"}, {"from": "gpt", "value": "x"}]},
        "not a record",
    ]
    (raw / "data.json").write_text(json.dumps(items))
    return wide, tall


def test_llava_conversations(tmp_path, caplog):
    raw = tmp_path / "raw"
    wide, tall = _llava_fixture(raw)
    with caplog.at_level(logging.WARNING):
        builder = _build("llava_conversations", tmp_path, raw, overrides={
            "name": "fixture", "json_file": "data.json", "image_root": "imgs"})
    records = _read(builder, "train")
    assert sorted(records) == ["tall", "text", "wide"]
    assert _skips(builder, "train") == {"corrupt image": 2, "missing image": 1, "empty image": 1,
                                        "malformed conversation": 3, "bad box": 1,
                                        "malformed record": 1}
    r = records["wide"]
    assert r["image"] == wide and (r["width"], r["height"]) == (200, 100)
    assert _turns(r) == [("human", "What is this?"), ("gpt", "Noise."),
                         ("human", "Where is the block?"), ("gpt", BOX_WIDE)]
    assert r["objects"].shape == (0, 4) and r["source"] == "fixture"
    r = records["tall"]
    assert r["image"] == tall and (r["width"], r["height"]) == (120, 160)
    assert _turns(r) == [("human", "What is in <object>?"), ("gpt", "A box.")]
    np.testing.assert_array_equal(r["objects"], [[10, 20, 70, 100]])
    r = records["text"]
    assert r["image"] == b"" and (r["width"], r["height"]) == (0, 0)
    # Every skipped record is logged with its id and the file it came from.
    for record_id in ("corrupt", "truncated", "missing", "empty", "gpt_first", "no_turns",
                      "object_count", "bad_box"):
        assert any(f"record {record_id}:" in m for m in caplog.messages), record_id
    assert any("missing.jpg" in m for m in caplog.messages)
    assert any("data.json: record gpt_first: malformed conversation" in m for m in caplog.messages)


def test_build_and_read_without_tensorflow(tmp_path):
    assert importlib.util.find_spec("tensorflow") is None
    builder = _build("tgg_shapes", tmp_path, None, config="tiny")
    source = tfds.data_source("tgg_shapes/tiny", split="validation", data_dir=tmp_path / "data")
    assert len(source) == 32
    dataset = grain.MapDataset.source(source).map(builders.decode_record)
    assert dataset[5]["source"] == "tgg_shapes"
    assert "tensorflow" not in sys.modules
    assert builder.info.splits["train"].num_examples == 64


# ---------------------------------------------------------------- refcoco


def _refcoco_fixture(raw, refs=None):
    _write_image(raw / "train2014" / "COCO_train2014_000000000001.jpg", (200, 100))
    _write_image(raw / "train2014" / "COCO_train2014_000000000002.jpg", (100, 150), seed=1)
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_00000000000{i}.jpg"} for i in (1, 2, 3)],
        "annotations": [{"id": 11, "image_id": 1, "bbox": [20, 10, 40, 40], "category_id": 1},
                        {"id": 12, "image_id": 2, "bbox": [10, 30, 50, 60], "category_id": 1},
                        {"id": 13, "image_id": 3, "bbox": [0, 0, 10, 10], "category_id": 1},
                        {"id": 14, "image_id": 1, "bbox": [100, 0, 50, 100], "category_id": 1}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    refs = refs if refs is not None else [
        {"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "train",
         "sentences": [{"sent_id": 0, "sent": "left red block"},
                       {"sent_id": 1, "sent": "the  red one ."}]},
        {"ref_id": 1, "ann_id": 12, "image_id": 2, "split": "val",
         "sentences": [{"sent_id": 2, "sent": "the car"}]},
        {"ref_id": 2, "ann_id": 13, "image_id": 3, "split": "testA",
         "sentences": [{"sent_id": 9, "sent": "gone"}]},
        {"ref_id": 3, "ann_id": 14, "image_id": 1, "split": "testA",
         "sentences": [{"sent_id": 3, "sent": "right thing"}, {"sent_id": 4, "sent": ""}]},
        {"ref_id": 4, "ann_id": 99, "image_id": 1, "split": "testB",
         "sentences": [{"sent_id": 8, "sent": "unknown annotation"}]},
        {"ref_id": 5, "ann_id": 11, "image_id": 1, "split": "testB",
         "sentences": [{"sent_id": 5, "raw": "Red Block"}]},
    ]
    (raw / "refcoco").mkdir(parents=True, exist_ok=True)
    (raw / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (raw / "refcoco" / "instances.json").write_text(json.dumps(instances))


def test_refcoco(tmp_path, caplog):
    raw = tmp_path / "raw"
    _refcoco_fixture(raw)
    with caplog.at_level(logging.WARNING):
        builder = _build("refcoco", tmp_path, raw, config="refcoco")
    train = _read(builder, "train")
    assert sorted(train) == ["0_0", "0_0_caption", "0_1", "0_1_caption"]
    assert _turns(train["0_0"]) == [("human", "Output the coordinate of left red block."),
                                    ("gpt", BOX_WIDE)]
    assert _turns(train["0_1"]) == [("human", "Output the coordinate of the red one."),
                                    ("gpt", BOX_WIDE)]
    assert _turns(train["0_1_caption"]) == [("human", f"Describe the region {BOX_WIDE}."),
                                            ("gpt", "the red one")]
    assert train["0_0"]["task"] == "rec" and train["0_0_caption"]["task"] == "caption"
    val = _read(builder, "val")
    assert _turns(val["1_2"]) == [("human", "Output the coordinate of the car."), ("gpt", BOX_TALL)]
    np.testing.assert_array_equal(val["1_2"]["gt_box"], [10, 30, 60, 90])
    assert val["1_2"]["expression"] == "the car"
    assert (val["1_2"]["width"], val["1_2"]["height"]) == (100, 150)
    assert val["1_2"]["source"] == "refcoco"
    test_a = _read(builder, "testA")
    assert list(test_a) == ["3_3"] and _turns(test_a["3_3"])[1] == ("gpt", BOX_WIDE_RIGHT)
    test_b = _read(builder, "testB")
    assert _turns(test_b["5_5"])[0] == ("human", "Output the coordinate of Red Block.")
    assert _skips(builder, "testA") == {"missing image": 1, "malformed conversation": 1}
    assert _skips(builder, "testB") == {"unreadable annotation": 1}
    assert _skips(builder, "train") == {} and _skips(builder, "val") == {}
    assert any("record 2: missing image" in m and "000000000003.jpg" in m for m in caplog.messages)
    assert any("record 4: unreadable annotation" in m and "refs(unc).p" in m
               for m in caplog.messages)


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refcoco_refuses_a_malicious_refs_pickle(tmp_path):
    raw, marker = tmp_path / "raw", tmp_path / "pwned"
    _refcoco_fixture(raw, refs=[_Boom(marker)])
    with pytest.raises(pickle.UnpicklingError, match=r"refs\(unc\)\.p.*refusing"):
        _build("refcoco", tmp_path, raw, config="refcoco")
    assert not marker.exists()


# ---------------------------------------------------------------- visual_genome


def _vg_fixture(raw):
    _write_image(raw / "VG_100K" / "1.jpg", (200, 100))
    _write_image(raw / "VG_100K_2" / "2.jpg", (100, 150), seed=1)
    images = [{"image_id": 1, "url": "https://cs.stanford.edu/x/VG_100K/1.jpg"},
              {"image_id": 2, "url": "https://cs.stanford.edu/x/VG_100K_2/2.jpg"},
              {"image_id": 3, "url": "https://cs.stanford.edu/x/VG_100K/3.jpg"}]

    def region(rid, x, y, w, h, phrase):
        return {"region_id": rid, "x": x, "y": y, "width": w, "height": h, "phrase": phrase}

    regions = [
        {"id": 1, "regions": [region(10, 20, 10, 40, 40, "a red ball"),
                              region(11, 100, 0, 50, 100, "A tree."),
                              region(12, 150, 0, 40, 50, "a tree"),
                              region(13, 5, 5, 0, 10, "nothing"),
                              region(14, 5, 5, 10, 10, "   ")]},
        {"id": 2, "regions": [region(20, 10, 30, 50, 60, "the car")]},
        {"id": 3, "regions": [region(30, 0, 0, 5, 5, "lost")]},
    ]
    (raw / "image_data.json").write_text(json.dumps(images))
    (raw / "region_descriptions.json").write_text(json.dumps(regions))


def test_visual_genome(tmp_path, caplog):
    raw = tmp_path / "raw"
    _vg_fixture(raw)
    with caplog.at_level(logging.WARNING):
        builder = _build("visual_genome", tmp_path, raw)
    records = _read(builder, "train")
    assert sorted(records) == ["1_0_caption", "1_0_rec", "2_0_caption", "2_0_rec"]
    assert _turns(records["1_0_caption"]) == [
        ("human", f"Describe the region {BOX_WIDE}."), ("gpt", "a red ball"),
        ("human", f"Describe the region {BOX_WIDE_RIGHT}."), ("gpt", "A tree"),
        ("human", "Describe the region [0.750, 0.250, 0.950, 0.500]."), ("gpt", "a tree")]
    # "a tree" twice in image 1 is ambiguous, so REC keeps only the ball.
    assert _turns(records["1_0_rec"]) == [("human", "Output the coordinate of a red ball."),
                                          ("gpt", BOX_WIDE)]
    assert _turns(records["2_0_rec"]) == [("human", "Output the coordinate of the car."),
                                          ("gpt", BOX_TALL)]
    assert records["2_0_rec"]["task"] == "rec"
    assert _skips(builder, "train") == {"bad box": 1, "malformed conversation": 1,
                                        "missing image": 1}
    assert any("record 1/13: bad box" in m for m in caplog.messages)
    # Smaller groups: image 1 splits into regions {10, 11} and {12}.
    grouped = _build("visual_genome", tmp_path, raw,
                     overrides={"name": "pairs", "regions_per_record": 2})
    assert sorted(_read(grouped, "train")) == ["1_0_caption", "1_0_rec", "1_1_caption",
                                               "2_0_caption", "2_0_rec"]


# ---------------------------------------------------------------- flickr30k_entities


def _voc_object(entity, corners=None):
    if corners is None:
        return f"<object><name>{entity}</name><nobndbox>1</nobndbox></object>"
    box = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), corners))
    return f"<object><name>{entity}</name><bndbox>{box}</bndbox></object>"


_XML_1 = "\n".join([
    "<annotation><filename>1.jpg</filename>",
    "<size><width>200</width><height>100</height><depth>3</depth></size>",
    _voc_object(1, (21, 11, 60, 50)),
    _voc_object(2, (101, 11, 140, 30)),
    _voc_object(2, (151, 61, 170, 90)),
    _voc_object(3),
    "</annotation>"])


def _flickr_fixture(raw):
    _write_image(raw / "flickr30k-images" / "1.jpg", (200, 100))
    _write_image(raw / "flickr30k-images" / "2.jpg", (200, 100))
    (raw / "Sentences").mkdir(parents=True)
    (raw / "Annotations").mkdir(parents=True)
    (raw / "Sentences" / "1.txt").write_text(
        "[/EN#1/people A man] in [/EN#2/clothing/other an orange hat] looks at "
        "[/EN#3/other something] .\n"
        "[/EN#1/people A guy] stands near [/EN#0/notvisual nothing] , smiling .\n"
        "[/EN#1/people A broken line .\n")
    (raw / "Annotations" / "1.xml").write_text(_XML_1)
    for i in (2, 3):
        (raw / "Sentences" / f"{i}.txt").write_text("[/EN#1/people A man] .\n")
    (raw / "Annotations" / "2.xml").write_text("<annotation><object>")  # malformed XML
    (raw / "Annotations" / "3.xml").write_text(_XML_1)  # but no image 3
    (raw / "train.txt").write_text("1\n2\n3\n")
    (raw / "val.txt").write_text("1\n")


def test_flickr30k_entities(tmp_path, caplog):
    raw = tmp_path / "raw"
    _flickr_fixture(raw)
    with caplog.at_level(logging.WARNING):
        builder = _build("flickr30k_entities", tmp_path, raw)
    train = _read(builder, "train")
    assert sorted(train) == ["1_0", "1_1"]
    prompt = ("human", "Briefly describe the image and give the coordinate of each object you "
                       "mention.")
    # xml corners are 1-based inclusive: <xmin>101</xmin><xmax>140</xmax> -> [100, 140).
    assert _turns(train["1_0"]) == [prompt, (
        "gpt", f"A man {BOX_WIDE} in an orange hat [0.500, 0.300, 0.700, 0.400] "
               "[0.750, 0.550, 0.850, 0.700] looks at something.")]
    assert _turns(train["1_1"])[1] == ("gpt", f"A guy {BOX_WIDE} stands near nothing, smiling.")
    assert _skips(builder, "train") == {"malformed conversation": 1, "unreadable annotation": 1,
                                        "missing image": 1}
    assert sorted(_read(builder, "val")) == ["1_0", "1_1"]
    assert any("2.xml" in m and "record 2: unreadable annotation" in m for m in caplog.messages)
    assert any("record 1_2: malformed conversation" in m for m in caplog.messages)


# ---------------------------------------------------------------- pope


def _pope_fixture(raw):
    folder = raw / "val2014"
    _write_image(folder / "COCO_val2014_000000000001.jpg", (200, 100))
    _write_image(folder / "COCO_val2014_000000000002.jpg", (100, 150), seed=1)
    _write_bad_images(folder)

    def line(qid, image, text, label):
        return json.dumps({"question_id": qid, "image": image, "text": text, "label": label})

    one, two = "COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"
    (raw / "coco_pope_random.json").write_text("\n".join([
        line(1, one, "Is there a dog in the image?", "yes"),
        line(2, one, "Is there a cat in the image?", "no"),
        line(3, two, "Is there a car in the image?", "yes"),
        line(4, two, "Is there a bus in the image?", "maybe"),
        '{"question_id": 5, "image": ',
        line(6, "COCO_val2014_000000000099.jpg", "Is there a cow in the image?", "no"),
        line(7, "truncated.jpg", "Is there a cup in the image?", "no"),
    ]) + "\n")
    (raw / "coco_pope_popular.json").write_text(
        line(8, two, "Is there a person in the image?", "no") + "\n")


def test_pope(tmp_path):
    raw = tmp_path / "raw"
    _pope_fixture(raw)
    builder = _build("pope", tmp_path, raw)
    assert set(builder.info.splits) == {"random", "popular"}
    random = _read(builder, "random")
    assert sorted(random) == ["1", "2", "3"]
    suffix = "\nAnswer the question using a single word or phrase."
    assert _turns(random["1"]) == [("human", "Is there a dog in the image?" + suffix),
                                   ("gpt", "Yes")]
    assert (random["2"]["label"], random["2"]["category"]) == ("no", "random")
    assert random["2"]["question"] == "Is there a cat in the image?"
    assert _turns(random["2"])[1] == ("gpt", "No")
    assert (random["3"]["width"], random["3"]["height"]) == (100, 150)
    assert _skips(builder, "random") == {"unreadable annotation": 2, "missing image": 1,
                                         "corrupt image": 1}
    popular = _read(builder, "popular")
    assert popular["8"]["category"] == "popular" and popular["8"]["label"] == "no"


def test_raw_dir_can_come_from_tfds_manual_dir(tmp_path):
    raw = tmp_path / "raw"
    _pope_fixture(raw)
    builder = tfds.builder("pope", data_dir=tmp_path / "data")  # no raw_dir
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=raw, try_download_gcs=False))
    assert builder.info.splits["random"].num_examples == 3
    assert builder.info.file_format.value == "array_record"


# ---------------------------------------------------------------- tgg_shapes


def test_tgg_shapes_build_is_deterministic(tmp_path):
    sizes = {"name": "mini", "train_size": 8, "validation_size": 6, "test_size": 6}
    images = []
    for run in ("a", "b"):
        builder = builders.make_builder("tgg_shapes", data_dir=tmp_path / run, overrides=sizes)
        builder.download_and_prepare()
        images.append({s: sorted(r["image"] for r in _read(builder, s).values())
                       for s in ("train", "validation", "test")})
    assert images[0] == images[1]
    assert [len(images[0][s]) for s in ("train", "validation", "test")] == [8, 6, 6]
    assert not set(images[0]["validation"]) & set(images[0]["test"])
    record = _read(builder, "validation")["tgg_shapes-validation-000000"]
    assert record["task"] == "rec" and record["answer"] == record["conversations"][1]["value"]


def test_tgg_shapes_ensure_built(tmp_path):
    builder = tgg_shapes.ensure_built(tmp_path, config="tiny")
    info = tmp_path / "tgg_shapes" / "tiny" / str(tgg_shapes.TggShapes.VERSION) / "dataset_info.json"
    stamp = info.stat().st_mtime_ns
    again = tgg_shapes.ensure_built(tmp_path, config="tiny")
    assert info.stat().st_mtime_ns == stamp  # not rebuilt
    assert again.info.splits["test"].num_examples == builder.info.splits["test"].num_examples == 32


# ---------------------------------------------------------------- CLI


def test_cli_build_prints_counts(tmp_path, capsys):
    raw = tmp_path / "raw"
    _pope_fixture(raw)
    argv = ["build", "pope", "--raw_dir", str(raw), "--data_dir", str(tmp_path / "data")]
    assert cli.run(argv) == 0
    out = capsys.readouterr().out
    assert "random: 3 written, 4 skipped (corrupt image: 1, missing image: 1, " \
           "unreadable annotation: 2)" in out
    assert "popular: 1 written, 0 skipped" in out
    assert cli.run(argv) == 0
    assert "already built" in capsys.readouterr().out
    assert cli.run(["list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in builders.BUILDERS)
    assert cli.run(["build", "tgg_shapes", "--data_dir", str(tmp_path / "d"),
                    "--config", "tiny", "--set", "train_size=9"]) == 2
    assert "new config name" in capsys.readouterr().err
    assert cli.run(["build", "tgg_shapes", "--data_dir", str(tmp_path / "d"), "--config", "tiny",
                    "--set", "name=nine", "--set", "train_size=9"]) == 0
    assert "train: 9 written, 0 skipped" in capsys.readouterr().out
    # A dataset-wide problem fails the build with a message naming the file, not a traceback.
    assert cli.run(["build", "refcoco", "--raw_dir", str(raw), "--data_dir", str(tmp_path)]) == 1
    assert "refs(unc).p" in capsys.readouterr().err
