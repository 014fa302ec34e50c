"""The trainer: exact resume, sharding, freezing, config errors, preemption.

Every run here is a small tiny-preset model on the tgg_shapes "tiny" build (64 train records).
"""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from tests import tiny_run
from tgg_jax.models.naming import tgg_name
from tgg_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_config(data_dir, **overrides):
    """tests/tiny_run.py's small config, stepping 4 times and checkpointing every 2 steps."""
    return tiny_run.small_config(data_dir, **{"total_steps": 4, "checkpoint.every_steps": 2,
                                              "checkpoint.async_save": False, "eval_every_steps": 0,
                                              **overrides})


def params_of(run) -> dict[str, np.ndarray]:
    state = nnx.merge_state(run.state.trainable, run.state.frozen)
    return {tgg_name(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def losses(workdir) -> list[float]:
    with open(os.path.join(workdir, "history.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


class Crash(RuntimeError):
    pass


def test_resume_after_kill_is_exact(data_dir, tmp_path, monkeypatch):
    straight = str(tmp_path / "straight")
    run = trainer.setup(small_config(data_dir), straight)
    trainer.train(run)
    expected = params_of(run)

    resumed = str(tmp_path / "resumed")
    run = trainer.setup(small_config(data_dir), resumed)
    to_global, calls = trainer.pipeline.to_global, []

    def dies_on_third_batch(*args, **kwargs):  # the process dies during step 3
        calls.append(1)
        if len(calls) == 3:
            raise Crash("killed")
        return to_global(*args, **kwargs)
    monkeypatch.setattr(trainer.pipeline, "to_global", dies_on_third_batch)
    with pytest.raises(Crash):
        trainer.train(run)
    assert run.checkpointer.latest_step() == 2

    monkeypatch.undo()
    run = trainer.setup(small_config(data_dir), resumed)  # a new command in the same workdir
    assert int(run.state.step) == 2
    trainer.train(run)
    got = params_of(run)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert losses(resumed) == losses(straight)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    """Step 3's loss is NaN: the run stops naming it and checkpoint 2, and saves nothing after,
    although the trainer reads a step's loss only once the next step is dispatched."""
    workdir = str(tmp_path / "w")
    run = trainer.setup(small_config(data_dir, total_steps=6), workdir)
    jit_step, _ = trainer.compiled_steps(run)

    def nan_at_step_3(state, batch):
        step = int(state.step)  # before the call: the step donates the state
        new_state, metrics = jit_step(state, batch)
        if step == 2:
            metrics = {**metrics, "loss": metrics["loss"] * np.nan}
        return new_state, metrics
    run.jitted["train"] = nan_at_step_3
    with pytest.raises(trainer.NonFiniteLossError, match=r"loss is nan at step 3.*\(step 2\)"):
        trainer.train(run)
    assert run.checkpointer.latest_step() == 2
    restored = trainer.setup(small_config(data_dir, total_steps=6), workdir, with_data=False)
    assert int(restored.state.step) == 2


def test_frozen_parameters_unchanged_and_without_optimizer_state(data_dir, tmp_path):
    cfg = small_config(data_dir, total_steps=1, trainable=("projector\\..*",))
    run = trainer.setup(cfg, str(tmp_path / "w"))
    before = params_of(run)
    trainer.train(run)
    after = params_of(run)
    changed = {n for n in before if not np.array_equal(before[n], after[n])}
    assert changed and all(n.startswith("projector.") for n in changed)
    opt_leaves = [tgg_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(run.state.opt_state)[0]]
    param_leaves = [n for n in opt_leaves if "kernel" in n or "bias" in n or "scale" in n or "embedding" in n]
    assert param_leaves and all("projector" in n for n in param_leaves)


def test_sharded_step_equals_single_device(data_dir, tmp_path):
    single = trainer.setup(small_config(data_dir, total_steps=1, **{"mesh.data": 1, "mesh.fsdp": 1,
                                                                    "mesh.tensor": 1}),
                           str(tmp_path / "one"), devices=jax.devices()[:1])
    trainer.train(single)
    sharded = trainer.setup(small_config(data_dir, total_steps=1, **{"mesh.data": 2, "mesh.fsdp": 2,
                                                                     "mesh.tensor": 2}), str(tmp_path / "eight"))
    assert sharded.mesh.devices.size == 8
    trainer.train(sharded)
    a, b = params_of(single), params_of(sharded)
    # Adam's first update is lr * g / (|g| + eps): where |g| is tiny, the sharded reduction order
    # shows up at ~1e-6 (lr 2e-3); a wrong sharding would be off by ~lr.
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, rtol=1e-5, err_msg=name)
    q = sharded.state.trainable["llm"]["layers"][0]["self_attn"]["q_proj"]["kernel"]
    assert q.get_value().sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


@pytest.mark.parametrize("overrides, message", [
    ({"mesh.data": 3}, "does not fit the 8 devices"),
    ({"batch_size": 6}, "not divisible by data x fsdp"),
    ({"trainable": ("projektor\\..*",)}, "matches no parameter"),
    ({"trainable": ("clip\\..*",)}, "vision towers are frozen"),
    ({"data.mixture": ()}, "mixture is empty"),
    ({"loss_normalization": "example"}, "loss_normalization must be one of"),
    ({"tower_align.steps": 5, "init_from": "/elsewhere"}, "cannot be combined with config.init_from"),
])
def test_config_errors_are_clear_and_early(data_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        trainer.setup(small_config(data_dir, **overrides), str(tmp_path / "w"), with_data=False)


def test_unknown_config_key_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tgg_jax.train.main", "--config", "configs/tiny.py",
                          "--config.no_such_key=1", "--workdir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "no_such_key" in out.stderr


def _cli_args(data_dir, workdir, steps):
    return [sys.executable, "-m", "tgg_jax.train.main",
            *tiny_run.cli_args(data_dir, workdir, steps, **{"checkpoint.every_steps": 1000})]


@pytest.mark.parametrize("extra, devices", [([], 2), (["--cpu_devices=1"], 1)])
def test_config_cpu_devices_splits_the_cpu_and_the_flag_wins(data_dir, tmp_path, extra, devices):
    """configs/tiny.py runs the CPU as 2 devices (config.cpu_devices); --cpu_devices overrides it."""
    out = subprocess.run(_cli_args(data_dir, str(tmp_path / "w"), 1) + extra, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"over {devices} cpu device(s) in 1 process(es)" in out.stderr, out.stderr[-3000:]


def test_sigterm_saves_a_checkpoint_that_restores(data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    proc = subprocess.Popen(_cli_args(data_dir, workdir, 10_000), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if line.startswith("[step 2/"):
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    run = trainer.setup(small_config(data_dir, total_steps=10_000), workdir, with_data=False)
    assert run.checkpointer.latest_step() >= 2
    assert int(run.state.step) == run.checkpointer.latest_step()


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume(data_dir, tmp_path):
    import portpicker
    workdir = str(tmp_path / "w")

    def launch(steps):
        port = portpicker.pick_unused_port()
        procs = [subprocess.Popen(_cli_args(data_dir, workdir, steps) + [
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
            "--cpu_devices=2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        for p, out in zip(procs, outs):
            assert p.returncode == 0, out
        return outs

    launch(2)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "2", "data_iter"))) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    outs = launch(4)
    assert "[step 4/4" in outs[0]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
