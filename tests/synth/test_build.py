"""tgg-synth output -> tgg-data (llava_conversations) -> records, and a tiny training run."""

import math
import os
import re
import pathlib
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from tgg_jax.data import builders, cli as data_cli
from tgg_jax.synth import cli, merge
from tgg_jax.synth.shapes_server import serve

from tests.synth import common

REPO = pathlib.Path(cli.REPO)


def synthesize(tmp_path, count):
    images = common.make_images(tmp_path / "images", count)
    out = tmp_path / "synth"
    with serve(images, common.PROMPTS) as server:
        code, _ = cli.synthesize(common.shapes_config(server.base_url), images, out)
    assert code == 0
    merge.merge(out, out)
    return images, out


def build(family, images, out, data_dir):
    """`tgg-data build llava_conversations --config FAMILY --raw_dir OUT --image_root IMAGES`."""
    argv = ["build", "llava_conversations", "--config", family, "--raw_dir", str(out),
            "--image_root", str(images), "--data_dir", str(data_dir)]
    assert data_cli.run(argv) == 0


def test_families_build_and_read(tmp_path):
    images, out = synthesize(tmp_path, 4)
    data_dir = tmp_path / "tfds"
    merged = common.merged(out)
    for family in common.FAMILY_FILES:
        build(family, images, out, data_dir)
        source = tfds.data_source(f"llava_conversations/{family}", split="train",
                                  data_dir=data_dir)
        assert len(source) == len(merged[family]) > 0
        records = {r["id"]: r for r in map(builders.decode_record, source)}
        for raw in merged[family]:
            record = records[raw["id"]]
            assert record["image"] == (images / raw["image"]).read_bytes()
            assert record["objects"].tolist() == raw["objects"]
            assert [t["value"] for t in record["conversations"]] == [
                t["value"].replace("<image>\n", "") for t in raw["conversations"]]


@pytest.mark.slow  # 14-31 s on 2 shared cores
def test_tiny_training_reads_synth_records(tmp_path):
    from tests import tiny_run

    images, out = synthesize(tmp_path, 8)
    data_dir = tmp_path / "tfds"
    build("image_box", images, out, data_dir)
    args = tiny_run.cli_args(str(data_dir), str(tmp_path / "run"), steps=2, **{
        "data.mixture": (("llava_conversations/image_box", "train", 1.0),),
        "data.max_objects": 2})
    result = subprocess.run([sys.executable, "-m", "tgg_jax.train.main", *args], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = [line for line in result.stdout.splitlines() if line.startswith("[step 2/2")]
    assert last, result.stdout[-2000:]
    loss = float(re.search(r"loss=(\S+)", last[0]).group(1))
    assert math.isfinite(loss) and loss > 0
