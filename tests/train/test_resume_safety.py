"""A resume never trains another model, a failed or diverged save never becomes the state a
resume starts from, history.jsonl holds each step once, and a stuck run exits with its stacks.

Runs are tests/tiny_run.py's small tiny-preset model on the tgg_shapes "tiny" build.
"""

import errno
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import _thread

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from tests import tiny_run
from tgg_jax.errors import UserError
from tgg_jax.train import history, run_config, trainer, watchdog
from tgg_jax.train.checkpointing import CheckpointSaveError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_config(data_dir, **overrides):
    return tiny_run.small_config(data_dir, **{"total_steps": 2, "checkpoint.every_steps": 2,
                                              "checkpoint.async_save": False, "eval_every_steps": 0,
                                              **overrides})


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A workdir with a checkpoint at step 2."""
    workdir = str(tmp_path_factory.mktemp("trained"))
    trainer.train(trainer.setup(small_config(data_dir), workdir))
    return workdir


def snapshot(path) -> dict:
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            with open(file, "rb") as f:
                out[os.path.relpath(file, path)] = (os.stat(file).st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
    return out


@pytest.mark.parametrize("overrides, field, old, new", [
    ({"model.num_heads": 8, "model.num_kv_heads": 4}, "model.num_heads", 4, 8),  # same shapes
    ({"model.hidden_size": 64}, "model.hidden_size", 32, 64),
    ({"data.tokenizer": "/elsewhere/tokenizer"}, "data.tokenizer", "tgg_jax.tiny.tokenizer:make",
     "/elsewhere/tokenizer"),
    ({"data.mixture": (("tgg_shapes/tiny", "train", 2.0),)}, "data.mixture", None, None),
    ({"data.worker_count": 3}, "data.worker_count", None, 3),
])
def test_refused_change_names_the_field_and_writes_nothing(data_dir, trained, tmp_path, overrides,
                                                           field, old, new):
    workdir = str(tmp_path / "w")
    shutil.copytree(trained, workdir)
    before = snapshot(workdir)
    with pytest.raises(UserError) as e:
        trainer.setup(small_config(data_dir, **overrides), workdir, with_data=False)
    message = str(e.value)
    assert "\n" not in message and f"config.{field} is " in message, message
    if new is not None:
        assert f"is {new!r}" in message
    if old is not None:
        assert f"the run's is {old!r}" in message
    assert snapshot(workdir) == before


def test_refused_change_exits_2_with_one_line(data_dir, trained, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(trained, workdir)
    before = snapshot(workdir)
    args = tiny_run.cli_args(data_dir, workdir, 2, **{"checkpoint.every_steps": 2, "model.num_heads": 8,
                                                      "model.num_kv_heads": 4})
    out = subprocess.run([sys.executable, "-m", "tgg_jax.train.main", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("tgg-train:")]
    assert len(lines) == 1 and "config.model.num_heads is 8, the run's is 4" in lines[0], out.stderr[-3000:]
    assert snapshot(workdir) == before


def test_safe_changes_resume_and_are_listed(data_dir, trained, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(trained, workdir)
    cfg = small_config(data_dir, total_steps=3, log_every_steps=3, lr=1e-4)
    changes = run_config.check_resume(cfg, workdir)
    lr = small_config(data_dir).lr
    assert changes == ["log_every_steps: 1 -> 3", f"lr: {lr!r} -> 0.0001", "total_steps: 2 -> 3"]
    run = trainer.setup(cfg, workdir, with_data=False)
    assert int(run.state.step) == 2
    with open(os.path.join(workdir, run_config.CONFIG_FILE)) as f:
        assert json.load(f)["total_steps"] == 3


def test_config_is_saved_in_the_workdir_and_each_checkpoint(trained):
    with open(os.path.join(trained, "config.json")) as f:
        saved = json.load(f)
    assert saved["model"]["num_heads"] == 4 and saved["data"]["mixture"] == [["tgg_shapes/tiny", "train", 1.0]]
    assert os.path.isdir(os.path.join(trained, "checkpoints", "2", "run_config"))


def _steps(workdir):
    with open(os.path.join(workdir, history.FILE)) as f:
        return [json.loads(line)["step"] for line in f if '"loss"' in line]


def test_failed_async_save_stops_within_one_step_and_the_previous_checkpoint_restores(
        data_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    run = trainer.setup(small_config(data_dir, total_steps=10, **{"checkpoint.async_save": True}), workdir)
    save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def disk_full_at_step_4(self, x, directory):
        if isinstance(x, dict) and x.get("step") == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await save_fn(self, x, directory)
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full_at_step_4)
    jit_step, _ = trainer.compiled_steps(run)

    def slow_after_4(state, batch):  # the failed background write has surely ended by step 5's end
        step = int(state.step)
        out = jit_step(state, batch)
        if step >= 4:
            jax.block_until_ready(out)
            time.sleep(1.0)
        return out
    run.jitted["train"] = slow_after_4
    with pytest.raises(CheckpointSaveError, match=r"checkpoints/4 failed to save \(OSError: .*No space "
                                                  r"left on device\); stopping\. step 2 is the last complete"):
        trainer.train(run)
    # Noticed by the poll after step 4's save (when the write failed at once) or after step 5's.
    assert int(run.state.step) in (4, 5)
    monkeypatch.undo()
    resumed = trainer.setup(small_config(data_dir, total_steps=10, **{"checkpoint.async_save": True}),
                            workdir, with_data=False)
    assert int(resumed.state.step) == 2


def test_divergence_on_a_save_step_keeps_the_previous_checkpoint(data_dir, tmp_path):
    """Step 4's update leaves NaN parameters but its own metrics look fine: checkpoint 4 must
    not be written, and checkpoint 2 stays the one a resume starts from."""
    workdir = str(tmp_path / "w")
    run = trainer.setup(small_config(data_dir, total_steps=6), workdir)
    jit_step, _ = trainer.compiled_steps(run)

    def diverges_at_step_4(state, batch):
        step = int(state.step)
        new_state, metrics = jit_step(state, batch)
        if step == 3:
            new_state = new_state.replace(trainable=jax.tree.map(lambda x: x * np.nan, new_state.trainable))
        return new_state, metrics
    run.jitted["train"] = diverges_at_step_4
    with pytest.raises(trainer.NonFiniteLossError, match=r"state after step 4 has loss nan.*\(step 2\)"):
        trainer.train(run)
    assert run.checkpointer.latest_step() == 2
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "tgg_config.json"]


def test_nan_before_any_checkpoint_says_so(data_dir, tmp_path):
    run = trainer.setup(small_config(data_dir, total_steps=4, **{"checkpoint.every_steps": 4}),
                        str(tmp_path / "w"))
    jit_step, _ = trainer.compiled_steps(run)

    def nan_at_step_1(state, batch):
        new_state, metrics = jit_step(state, batch)
        return new_state, {**metrics, "loss": metrics["loss"] * np.nan}
    run.jitted["train"] = nan_at_step_1
    with pytest.raises(trainer.NonFiniteLossError, match="loss is nan at step 1.*No checkpoint has been "
                                                         "saved yet"):
        trainer.train(run)


class Crash(RuntimeError):
    pass


def test_history_holds_each_step_once_after_a_resume(data_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    cfg = functools.partial(small_config, data_dir, total_steps=4)
    run = trainer.setup(cfg(), workdir)
    to_global, calls = trainer.pipeline.to_global, []

    def dies_on_fourth_batch(*args, **kwargs):  # rows 1-3 are written, checkpoint 2 is the last
        calls.append(1)
        if len(calls) == 4:
            raise Crash("killed")
        return to_global(*args, **kwargs)
    monkeypatch.setattr(trainer.pipeline, "to_global", dies_on_fourth_batch)
    with pytest.raises(Crash):
        trainer.train(run)
    assert _steps(workdir) == [1, 2, 3]
    monkeypatch.undo()
    trainer.train(trainer.setup(cfg(), workdir))
    assert _steps(workdir) == [1, 2, 3, 4]


def test_watchdog_fires_on_a_step_that_sleeps(data_dir, tmp_path, monkeypatch):
    """Step 6 sleeps far past 5 x the median step time: the watchdog names the stall (its
    action here interrupts the main thread instead of exiting the test process)."""
    messages = []

    def interrupt(message):
        messages.append(message)
        _thread.interrupt_main()
    monkeypatch.setattr(trainer, "Watchdog", functools.partial(watchdog.Watchdog, on_stall=interrupt,
                                                               poll_seconds=0.1))
    run = trainer.setup(small_config(data_dir, total_steps=8, **{"watchdog.factor": 5.0,
                                                                 "watchdog.min_seconds": 2.0,
                                                                 "checkpoint.every_steps": 100}),
                        str(tmp_path / "w"))
    jit_step, _ = trainer.compiled_steps(run)

    def hangs_at_step_6(state, batch):
        if int(state.step) == 5:
            # Short sleeps: the watchdog's interrupt lands between them (one long sleep would
            # hold it off until it ends).
            for _ in range(1200):
                time.sleep(0.1)
        return jit_step(state, batch)
    run.jitted["train"] = hangs_at_step_6
    with pytest.raises(KeyboardInterrupt):
        trainer.train(run)
    assert len(messages) == 1 and "no training step for" in messages[0] and "after step 5" in messages[0]


def test_watchdog_default_dumps_every_stack_and_exits_3():
    script = ("import time\n"
              "from tgg_jax.train.watchdog import Watchdog\n"
              "w = Watchdog(5.0, 0.5, poll_seconds=0.05)\n"
              "for step in range(5):\n"
              "    w.beat(step); time.sleep(0.02)\n"
              "def stuck_in_a_collective():\n"
              "    time.sleep(60)\n"
              "stuck_in_a_collective()\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == watchdog.EXIT_CODE, out.stderr
    assert "stuck_in_a_collective" in out.stderr and "Thread 0x" in out.stderr  # faulthandler's dump
    assert out.stderr.strip().splitlines()[-1].startswith("tgg-train: no training step for")
