"""The llava_conversations configs the stage configs name, on the public release layouts:
LLaVA-CC3M-Pretrain-595K (chat.json + images/), LCS-558K (blip_laion_cc_sbu_558k.json +
images/00000/...), and the data engine's files with images elsewhere (--image_root)."""

import io
import json

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tgg_jax.data import builders, cli
from tgg_jax.data.builders.llava_conversations import BRIEF_CAPTION_INSTRUCTIONS


def _image(path, size=(40, 30), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())


def _pretrain(raw, layout, n=30, reverse=False):
    """n caption records as LLaVA ships them: the instruction and <image> in the human turn."""
    items = []
    for i in range(n):
        rel = f"GCC_train_{i:09d}.jpg" if layout == "cc3m" else f"{i // 10:05d}/{i:09d}.jpg"
        _image(raw / "images" / rel, seed=i)
        items.append({"id": rel.rsplit("/", 1)[-1][:-4], "image": rel, "conversations": [
            {"from": "human", "value": "Give a brief description of the image.\n<image>"},
            {"from": "gpt", "value": f"caption number {i}"}]})
    name = "chat.json" if layout == "cc3m" else "blip_laion_cc_sbu_558k.json"
    (raw / name).write_text(json.dumps(items[::-1] if reverse else items))


def _read(data_dir, name):
    source = tfds.data_source(name, split="train", data_dir=data_dir)
    return {r["id"]: r for r in (builders.decode_record(source[i]) for i in range(len(source)))}


def test_pretrain_reads_both_released_layouts_as_released(tmp_path):
    for layout in ("cc3m", "lcs558k"):
        raw, data = tmp_path / layout, tmp_path / f"data_{layout}"
        _pretrain(raw, layout)
        assert cli.run(["build", "llava_conversations", "--config", "pretrain", "--raw_dir",
                        str(raw), "--data_dir", str(data)]) == 0
        records = _read(data, "llava_conversations/pretrain")
        assert len(records) == 30
        first = records["GCC_train_000000003" if layout == "cc3m" else "000000003"]
        assert [t["value"] for t in first["conversations"]] == [
            "Give a brief description of the image.", "caption number 3"]
        assert (first["width"], first["height"]) == (40, 30)


def test_pretrain_instruct_samples_recorded_instructions_by_seed_and_id(tmp_path):
    _pretrain(tmp_path / "a", "lcs558k")
    _pretrain(tmp_path / "b", "lcs558k", reverse=True)  # same records, other order
    asked = []
    for raw, data in ((tmp_path / "a", tmp_path / "da"), (tmp_path / "b", tmp_path / "db")):
        builder = builders.make_builder("llava_conversations", config="pretrain_instruct",
                                        data_dir=data, raw_dir=raw)
        builder.download_and_prepare()
        records = _read(data, "llava_conversations/pretrain_instruct")
        asked.append({i: r["conversations"][0]["value"] for i, r in records.items()})
        assert {r["conversations"][1]["value"] for r in records.values()} == {
            f"caption number {i}" for i in range(30)}
        # The list and the seed are stored with the dataset, readable without the code.
        info = json.loads(next(data.rglob("dataset_info.json")).read_text())
        metadata = json.loads((next(data.rglob("dataset_info.json")).parent
                               / "metadata.json").read_text())
        assert metadata["instructions"] == list(BRIEF_CAPTION_INSTRUCTIONS)
        assert metadata["instruction_seed"] == 0
        assert info["name"] == "llava_conversations"
    assert asked[0] == asked[1]                       # by id, not by position
    assert set(asked[0].values()) <= set(BRIEF_CAPTION_INSTRUCTIONS)
    assert len(set(asked[0].values())) >= 5           # sampled, not one template


def test_engine_output_builds_under_its_name_with_images_elsewhere(tmp_path):
    images, out, data = tmp_path / "coco", tmp_path / "synth", tmp_path / "data"
    _image(images / "train2017" / "a.jpg", size=(200, 100))
    out.mkdir()
    (out / "image_box.json").write_text(json.dumps([{
        "id": "a_0", "image": "train2017/a.jpg", "objects": [[20, 10, 60, 50]],
        "conversations": [{"from": "human", "value": "<image>\nWhere is <object> in the image?"},
                          {"from": "gpt", "value": "[0.100, 0.300, 0.300, 0.500]"}]}]))
    assert cli.run(["build", "llava_conversations", "--config", "image_box", "--raw_dir", str(out),
                    "--image_root", str(images), "--data_dir", str(data)]) == 0
    record = _read(data, "llava_conversations/image_box")["a_0"]
    np.testing.assert_array_equal(record["objects"], [[20, 10, 60, 50]])
    assert (record["width"], record["height"]) == (200, 100)
    # Without --image_root the images are looked for under raw_dir: every record is skipped.
    assert cli.run(["build", "llava_conversations", "--config", "image_box", "--raw_dir", str(out),
                    "--data_dir", str(tmp_path / "data2")]) == 1
    # Only builders that read images from one folder take it.
    assert cli.run(["build", "mme", "--raw_dir", str(out), "--image_root", str(images),
                    "--data_dir", str(data)]) == 2
