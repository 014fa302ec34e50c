"""tgg-synth on the shapes backend: resume after a kill, refilter, secrets, merge -> tgg-data."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from tgg_jax.synth import cli, merge, store
from tgg_jax.synth.shapes_server import serve

from tests.synth import common

REPO = pathlib.Path(cli.REPO)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return common.make_images(tmp_path_factory.mktemp("synth") / "images", 10)


def run_and_merge(config, images, out):
    code, summary = cli.synthesize(config, images, out)
    assert code == 0
    merge.merge(out, out, expected=sorted(p.name for p in images.glob("*.png")))
    return summary


def test_kill_and_rerun_equals_uninterrupted(images, tmp_path):
    with serve(images, common.PROMPTS, latency_s=0.05) as server:
        config = common.shapes_config(server.base_url, **{"mllm.max_in_flight": 2})
        whole = tmp_path / "whole"
        run_and_merge(config, images, whole)
        killed = tmp_path / "killed"
        shard = store.shard_path(killed, 0, 1)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "tgg_jax.synth.cli", "run", f"--config={REPO}/configs/synth/default.py:shapes",
             f"--config.mllm.base_url={server.base_url}", "--config.mllm.max_in_flight=2",
             f"--config.prompts.dir={common.PROMPTS}", f"--image_root={images}",
             f"--workdir={killed}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                not shard.exists() or shard.read_bytes().count(b"\n") < 3):
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        lines = shard.read_bytes().count(b"\n")
        assert 3 <= lines < 10, "the kill should come mid-way"
        with open(shard, "ab") as f:  # as if the kill had cut a line short
            f.write(b'{"image": "shapes_train_0000')
        summary = run_and_merge(config, images, killed)
    assert summary["images"]["already_done"] == lines
    assert summary["images"]["done"] == 10 - lines
    stored = [r["image"] for r in store.read_lines(shard)]
    assert sorted(stored) == sorted(p.name for p in images.glob("*.png"))  # none lost, none twice
    assert common.merged(killed) == common.merged(whole)
    assert all(common.merged(whole).values())


def test_refilter_makes_no_request(images, tmp_path):
    out = tmp_path / "out"
    with serve(images, common.PROMPTS) as server:
        config = common.shapes_config(server.base_url)
        run_and_merge(config, images, out)
        before, requests = common.merged(out), server.requests
        strict = common.shapes_config(server.base_url, **{"filters.min_area": 0.03})
        counts = cli.refilter_shards(strict, out)
        merge.merge(out, out)
        assert server.requests == requests
    after = common.merged(out)
    # Shapes are 16-58 px wide in 160-224 px images (0.005-0.13 of the image): the small ones
    # no longer appear as object images; records without object images are untouched.
    assert 0 < len(after["image_box"]) < len(before["image_box"])
    assert after["grounding_descriptions"] == before["grounding_descriptions"]
    assert counts["dropped"] > 0
    dropped = 0
    for record in before["image_box"] + before["text_image"]:
        with Image.open(images / record["image"]) as image:
            width, height = image.size
        small = any((x2 - x1) * (y2 - y1) < 0.03 * width * height
                    for x1, y1, x2, y2 in record["objects"])
        kept = record in after["image_box"] + after["text_image"]
        assert kept != small, record
        dropped += small
    assert dropped > 0 and counts["kept"] == sum(len(v) for v in after.values())


def test_api_key_is_sent_but_never_stored_or_logged(images, tmp_path, monkeypatch, caplog):
    secret = "sk-synth-test-SECRET-98765"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    out = tmp_path / "out"
    caplog.set_level("DEBUG")
    with serve(images, common.PROMPTS) as server:
        run_and_merge(common.shapes_config(server.base_url), images, out)
        assert set(server.authorizations) == {f"Bearer {secret}"}
    assert caplog.records  # the run did log
    assert secret not in caplog.text
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_records_schema(images, tmp_path):
    out = tmp_path / "out"
    with serve(images, common.PROMPTS) as server:
        run_and_merge(common.shapes_config(server.base_url), images, out)
    annotations = json.loads((images / "annotations.json").read_text())
    for family, records in common.merged(out).items():
        assert records, family
        for r in records:
            human = [t["value"] for t in r["conversations"] if t["from"] == "human"]
            gpt = [t["value"] for t in r["conversations"] if t["from"] == "gpt"]
            assert sum(h.count("<object>") for h in human) == len(r["objects"])
            assert not any("<object>" in g for g in gpt)
            assert r["model"] == "tgg-shapes" and r["prompt_version"] == "v1"
            truth = [e["box"] for e in annotations[r["image"]]]
            assert all(box in truth for box in r["objects"])  # every crop is a real shape


def test_bad_input_is_counted_not_fatal(tmp_path):
    images = common.make_images(tmp_path / "images", 3)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    table = json.loads((images / "annotations.json").read_text())
    with serve(images, common.PROMPTS) as server:
        # The server answers for the image, but the source has no boxes for it.
        table["shapes_train_000002.png"] = []
        (images / "annotations.json").write_text(json.dumps(table))
        code, summary = cli.synthesize(common.shapes_config(server.base_url), images,
                                       tmp_path / "out")
    assert code == 0
    assert summary["images"]["skipped"] == {"unreadable image": 1, "detector found nothing": 1}
    assert summary["images"]["done"] == 4
    assert summary["problems"]["phrase not found"] >= 2
    lines = {r["image"]: r for r in store.read_lines(store.shard_path(tmp_path / "out", 0, 1))}
    assert lines["broken.png"]["status"] == "skipped"
    assert lines["shapes_train_000002.png"]["L1"]  # the intermediates up to the failure are kept


def test_cli_user_errors_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "tgg_jax.synth.cli"]
    for argv, message in ((["frobnicate"], "expected one command"),
                          (["run", f"--workdir={tmp_path}"], "--image_root"),
                          (["run", f"--workdir={tmp_path}", f"--image_root={tmp_path / 'none'}"],
                           "is not a directory"),
                          (["merge", f"--workdir={tmp_path}"], "no shard-*.jsonl")):
        out = subprocess.run(base + argv, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, (argv, out.stderr[-2000:])
        assert message in out.stderr.strip().splitlines()[-1], (argv, out.stderr[-2000:])


def test_detector_error_on_one_image_is_a_counted_skip(tmp_path, monkeypatch):
    from tgg_jax.synth import detectors

    images = common.make_images(tmp_path / "images", 3)
    detect = detectors.Annotations.detect

    def flaky(self, image, phrases, key):
        if key == "shapes_train_000001.png":
            raise RuntimeError("shape mismatch in the backbone")
        return detect(self, image, phrases, key)

    monkeypatch.setattr(detectors.Annotations, "detect", flaky)
    with serve(images, common.PROMPTS) as server:
        code, summary = cli.synthesize(common.shapes_config(server.base_url), images,
                                       tmp_path / "out")
    assert code == 0 and summary["images"]["skipped"] == {"detector error": 1}
    assert summary["images"]["done"] == 3
