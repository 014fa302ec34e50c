"""The embedded default's final evaluation: metrics next to baselines, pictures, and the
image-reliance losses (own image vs another record's)."""

import json
import os

import numpy as np

from tests.train.test_trainer import small_config
from tgg_jax.tiny.final_eval import evaluate_run, swap_images
from tgg_jax.train import trainer


def test_swap_images_moves_only_the_global_image():
    examples = [{"images": np.full((1, 2, 2, 3), i, np.uint8), "objects": np.full((1, 2, 2, 3), 10 + i, np.uint8)}
                for i in range(3)]
    swapped = swap_images(examples)
    assert [int(e["images"][0, 0, 0, 0]) for e in swapped] == [1, 2, 0]
    assert [int(e["objects"][0, 0, 0, 0]) for e in swapped] == [10, 11, 12]


def test_final_eval_writes_metrics_baselines_and_pictures(data_dir, tmp_path):  # noqa: F811
    c = small_config(data_dir, **{"final_eval.enabled": True, "final_eval.dataset": "tgg_shapes/tiny",
                                  "final_eval.examples": 24, "final_eval.batch_size": 8,
                                  "final_eval.max_new_tokens": 8})
    run = trainer.setup(c, str(tmp_path))
    trainer.train(run)
    results = evaluate_run(run)
    with open(tmp_path / "eval" / "metrics.json") as f:
        saved = json.load(f)
    assert set(saved) >= {"trained", "untrained", "constant_baseline"}
    assert saved["trained"]["heldout_loss"] < saved["untrained"]["heldout_loss"]
    tasks = {k.split("/", 1)[1] for k in saved["trained"] if k.startswith("loss/")}
    assert {"yesno", "rec"} <= tasks
    for task in tasks:
        own, other = saved["trained"][f"loss/{task}"], saved["trained"][f"loss_swapped_image/{task}"]
        assert np.isfinite(own) and np.isfinite(other) and own != other  # the image did change
    assert results["trained"] == saved["trained"]
    assert os.path.isfile(tmp_path / "eval" / "training_curves.png")
    assert os.listdir(tmp_path / "eval" / "examples")
