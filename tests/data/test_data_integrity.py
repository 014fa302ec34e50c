"""Hand-made raw files for the record checks of SPEC §1-2: placeholder counts, one build per
raw folder, boxes on EXIF-rotated images, and alpha dropped as PIL's convert("RGB") drops it
(in tgg_jax.data and in the PyTorch processor alike)."""

import io
import json
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from tgg_jax.data import builders, cli
from tgg_jax.data.preprocess import load_image, preprocess_image
from tgg_jax.tiny import tokenizer as tiny_tokenizer

QA = [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "Noise."}]


def _image_bytes(img, fmt, **kwargs):
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8))


def _exif6_jpeg(width=40, height=20):
    """Stored width x height; EXIF orientation 6 displays it height x width (turned clockwise)."""
    img = _noise(width, height)
    exif = img.getexif()
    exif[0x0112] = 6
    return _image_bytes(img, "JPEG", exif=exif.tobytes(), quality=95)


def _rgba_png():
    """Colours under every alpha, so dropping alpha and compositing on white differ."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (24, 32, 4), np.uint8)
    pixels[:8, :, 3] = 0  # fully transparent rows keep their (hidden) colours
    return _image_bytes(Image.fromarray(pixels, "RGBA"), "PNG")


def _write_raw(raw, items, images):
    (raw / "imgs").mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (raw / "imgs" / name).write_bytes(data)
    (raw / "data.json").write_text(json.dumps(items))


def _build(tmp_path, raw, **kwargs):
    builder = builders.make_builder("llava_conversations", data_dir=tmp_path / "data", raw_dir=raw,
                                    overrides={"name": "fixture", "json_file": "data.json",
                                               "image_root": "imgs"}, **kwargs)
    builder.download_and_prepare()
    return builder


def _records(builder):
    source = tfds.data_source("llava_conversations/fixture", split="train",
                              data_dir=builder.data_dir_root)
    return {r["id"]: r for r in (builders.decode_record(source[i]) for i in range(len(source)))}


def test_two_image_tags_for_one_image_is_a_counted_skip(tmp_path):
    raw = tmp_path / "raw"
    _write_raw(raw, [
        {"id": "one", "image": "a.jpg", "conversations": QA},
        {"id": "two", "image": "a.jpg", "conversations": [
            {"from": "human", "value": "<image>\nCompare with <image>."}, {"from": "gpt", "value": "Same."}]},
    ], {"a.jpg": _image_bytes(_noise(8, 8), "JPEG")})
    builder = _build(tmp_path, raw)
    assert sorted(_records(builder)) == ["one"]
    assert dict(builder.skipped["train"]) == {"placeholder mismatch": 1}


def test_box_valid_only_on_the_displayed_exif_rotated_image(tmp_path):
    """A 40 x 20 JPEG with orientation 6 is shown 20 wide and 40 tall; the box's y of 25-38 lies
    outside the stored 20 rows but inside the displayed 40."""
    raw = tmp_path / "raw"
    data = _exif6_jpeg()
    _write_raw(raw, [{"id": "rot", "image": "r.jpg", "objects": [[2, 25, 18, 38]], "conversations": [
        {"from": "human", "value": "<image>\nWhat is <object>?"}, {"from": "gpt", "value": "Noise."}]}],
        {"r.jpg": data})
    record = _records(_build(tmp_path, raw))["rot"]
    assert (record["width"], record["height"]) == (20, 40)
    assert load_image(data).size == (20, 40)  # what the model is shown
    np.testing.assert_array_equal(record["objects"], [[2, 25, 18, 38]])


def test_rebuild_from_another_raw_folder_is_refused_naming_overwrite(tmp_path, capsys):
    for name, seed in (("raw_a", 0), ("raw_b", 1)):
        _write_raw(tmp_path / name, [{"id": name, "image": "a.jpg", "conversations": QA}],
                   {"a.jpg": _image_bytes(_noise(8, 8, seed), "JPEG")})
    args = ["build", "llava_conversations", "--data_dir", str(tmp_path / "data"), "--config",
            "pretrain", "--set", "name=mine", "--set", "json_file=data.json",
            "--set", "image_root=imgs"]
    assert cli.run(args + ["--raw_dir", str(tmp_path / "raw_a")]) == 0
    assert cli.run(args + ["--raw_dir", str(tmp_path / "raw_a")]) == 0  # same folder: reused
    assert "already built" in capsys.readouterr().out
    assert cli.run(args + ["--raw_dir", str(tmp_path / "raw_b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raw_a" in err[0] and "raw_b" in err[0] and "--overwrite" in err[0]
    assert cli.run(args + ["--raw_dir", str(tmp_path / "raw_b"), "--overwrite"]) == 0
    source = tfds.data_source("llava_conversations/mine", split="train",
                              data_dir=str(tmp_path / "data"))
    assert [builders.decode_record(source[i])["id"] for i in range(len(source))] == ["raw_b"]


def _pil_reference(data, size):
    """LLaVA-1.5's preprocessing in PIL: EXIF orientation, convert("RGB"), expand2square with
    the CLIP mean, bicubic resize."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (122, 116, 104))
    square.paste(img, ((side - w) // 2, (side - h) // 2))
    return np.asarray(square.resize((size, size), Image.BICUBIC))


def test_rgba_alpha_is_dropped_like_convert_rgb():
    data = _rgba_png()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(data)), expected)
    white = np.asarray(load_image(data, alpha="white"))  # the option composites instead
    np.testing.assert_array_equal(white[:8], 255)


@pytest.mark.parametrize("make", [_rgba_png, _exif6_jpeg])
def test_pytorch_processor_and_pipeline_match_pil(make):
    from tgg_jax.torch.processor import TGGProcessor
    data, size = make(), 28
    expected = _pil_reference(data, size)
    np.testing.assert_array_equal(preprocess_image(load_image(data), size), expected)
    config = types.SimpleNamespace(image_size=size, image_tokens=4, object_tokens=4, object_margin=0.1)
    processor = TGGProcessor(tiny_tokenizer.make(None), config)
    got = processor(["What is this?"], images=[data])["images"].numpy()[0, 0]
    np.testing.assert_array_equal(got, expected)
