"""Preflight: a shipped stage config checked before anything is built, each mistake one line
(exit 2 from the CLI) that names the fix, and the summary of a good run."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import stage2
from tests.evals import fake_data
from tgg_jax.data import cli as data_cli
from tgg_jax.errors import UserError
from tgg_jax.train import preflight

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trained-looking run to start from (WORKDIR/checkpoints/5 + WORKDIR/tokenizer) and one
    built dataset: the engine's image_box set, three records."""
    root = tmp_path_factory.mktemp("preflight")
    _, params = fake_data.make_checkpoint(str(root / "prev"))
    images, raw, data = root / "images", root / "raw", root / "data"
    images.mkdir()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(images / "a.png")
    raw.mkdir()
    (raw / "image_box.json").write_text(json.dumps([
        {"id": f"r{i}", "image": "a.png", "objects": [[1, 1, 20, 20]], "conversations": [
            {"from": "human", "value": "<image>\nWhere is <object>?"},
            {"from": "gpt", "value": "[0.000, 0.100, 0.500, 0.600]"}]} for i in range(3)]))
    assert data_cli.run(["build", "llava_conversations", "--config", "image_box", "--raw_dir",
                         str(raw), "--image_root", str(images), "--data_dir", str(data)]) == 0
    return root, params


def _config(root, **fields):
    c = stage2.get_config("0.5b")
    c.init_from = str(root / "prev" / "checkpoints")
    c.data.data_dir = str(root / "data")
    c.data.mixture = (("llava_conversations/image_box", "train", 210_000.0),)
    c.data.num_examples = 3
    c.batch_size = 8                   # the tests' 8 CPU devices (tests/conftest.py)
    for key, value in fields.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def test_summary_of_a_good_run(setup, tmp_path):
    root, params = setup
    summary = preflight.run_preflight(_config(root, total_steps=6), str(tmp_path / "run"))
    sizes = {k: sum(math.prod(np.shape(v)) for v in _leaves(params[k])) for k in params}
    assert summary.trainable == sizes["llm"] + sizes["projector"]  # SPEC §3: projector + LLM
    assert summary.frozen == sizes["clip"] + sizes["dinov2"]
    # Stage 2 packs: 8 rows of ~2.8 examples a step; 6 steps over 3 examples.
    assert summary.steps == 6 and summary.epochs == pytest.approx(6 * 8 * 2.8 / 3)
    assert "8 packed rows (~22.4 examples)" in preflight.render(summary)
    assert summary.datasets[0].examples == 3
    text = preflight.render(summary)
    assert "llava_conversations/image_box" in text and "100.0%" in text
    assert summary.init_from == str(root / "prev" / "checkpoints" / "5")
    assert f"{8 * 2048:,} tokens" in text                        # batch x longest bucket


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


@pytest.mark.parametrize("fields,message", [
    ({"data.mixture": (("llava_conversations/text_image", "train", 1.0),)},
     "dataset llava_conversations/text_image is not built in {data}: tgg-data build "
     "llava_conversations --config text_image --raw_dir RAW_DIR --data_dir {data}"),
    ({"data.mixture": (("llava_conversations/image_box", "validation", 1.0),)},
     "has no split 'validation' (it has train)"),
    ({"data.mixture": (("coco_captions", "train", 1.0),)}, "is not a tgg-jax dataset"),
    ({"init_from": "{root}/nowhere"}, "config.init_from: "),
    ({"model.preset": "3b"}, "config.model.preset='3b' disagrees with init_from"),
    ({"grad_accum_steps": 4}, "is not divisible by"),
    ({"model.preset": "", "init_from": ""}, "no config.init_from to take it from"),
    ({"data.tokenizer": "{root}/no_tokenizer"}, "config.data.tokenizer: no tokenizer.json"),
    ({"trainable": ("vision\\..*",)}, "config.trainable"),
])
def test_each_mistake_is_one_line_naming_the_fix(setup, tmp_path, fields, message):
    root, _ = setup
    subst = {"root": str(root), "data": str(root / "data")}
    fields = {k: v.format(**subst) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(UserError) as error:
        preflight.run_preflight(_config(root, **fields), str(tmp_path / "run"))
    assert message.format(**subst) in str(error.value)
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_an_unwritable_workdir(setup, tmp_path):
    root, _ = setup
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is not writable"):
        preflight.run_preflight(_config(root), str(tmp_path / "file" / "run"))


def _tgg_train(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "tgg_jax.train.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_one_line_and_exits_2(setup, tmp_path):
    root, _ = setup
    common = ["--config", "configs/stage2.py:0.5b", "--workdir", str(tmp_path / "run"),
              f"--config.init_from={root / 'prev' / 'checkpoints'}",
              f"--config.data.data_dir={root / 'data'}"]
    missing = _tgg_train(*common)  # stage 2's RefCOCO is not built here
    assert missing.returncode == 2, missing.stderr[-2000:]
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("tgg-train: dataset refcoco/refcoco is not built in")
    assert "tgg-data build refcoco --config refcoco --raw_dir RAW_DIR" in last
    assert "Traceback" not in missing.stderr
    typo = _tgg_train(*common, "--config.data.mixtur=1")
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines()[-1] == (
        "tgg-train: --config.data.mixtur: no config key 'mixtur' "
        "(Did you mean \"mixture\" instead of \"mixtur\"?)")
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_preflight_flag_prints_the_summary_and_stops(setup, tmp_path):
    root, _ = setup
    done = _tgg_train("--config", "configs/stage2.py:0.5b", "--workdir", str(tmp_path / "run"),
                      "--preflight", f"--config.init_from={root / 'prev' / 'checkpoints'}",
                      f"--config.data.data_dir={root / 'data'}", "--config.total_steps=4",
                      "--config.data.mixture=(('llava_conversations/image_box','train',1.0),)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "preflight: ok" in done.stdout and "llava_conversations/image_box" in done.stdout
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
