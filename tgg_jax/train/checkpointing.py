"""Orbax checkpoints of a training run: parameters, optimiser state, step, RNG and every host's
Grain iterator state, saved asynchronously; the last N kept; resume from the latest by itself.

Layout under WORKDIR/checkpoints/:

    tgg_config.json             the model config (so any step directory is a parameter checkpoint)
    <step>/params/              all parameters (pure dict), restorable by tgg_jax.checkpoint.load_params
    <step>/opt_state/           optimiser state of the trainable parameters
    <step>/meta/                step and RNG seed (JSON)
    <step>/run_config/          the run's resolved config (JSON; run_config.py)
    <step>/data_iter/           process_<i>-of-<n>.json, one Grain iterator state per host
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx

from tgg_jax.checkpoint import save_config
from tgg_jax.errors import RunStopped
from tgg_jax.train.step import TrainState


class CheckpointSaveError(RunStopped):
    """An asynchronous checkpoint save that failed (full disk, lost mount, ...)."""


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Saves and restores TrainState (+ the data iterator) under `directory`."""

    def __init__(self, directory: str, *, keep: int, every_steps: int, async_save: bool = True,
                 model_config=None, run_config: dict | None = None):
        self.directory = os.path.abspath(directory)
        self.every_steps = every_steps
        self.run_config = run_config
        self._pending: int | None = None  # step of a save still being written in the background
        self._last_complete: int | None = None
        if model_config is not None and jax.process_index() == 0:
            save_config(self.directory, model_config)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"params": ocp.StandardCheckpointHandler(),
                           "opt_state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           "run_config": ocp.JsonCheckpointHandler(),
                           "data_iter": grain.checkpoint.CheckpointHandler()})

        self._last_complete = self.manager.latest_step()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def check(self, block: bool = False) -> None:
        """Raise CheckpointSaveError once a background save has failed (called every step, so
        a full disk stops the run within one step, not at the next save). Orbax keeps the
        failed save's temporary directory out of latest_step(), so the previous step restores."""
        if self._pending is None or (not block and self.manager.is_saving_in_progress()):
            return
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()  # raises the background save's failure
        except Exception as e:  # noqa: BLE001 — any failure of the save is reported the same way
            raise self._failed(step, e) from e
        self._last_complete = step

    def _failed(self, step: int, error: Exception) -> CheckpointSaveError:
        previous = (f"step {self._last_complete} is the last complete one"
                    if self._last_complete is not None else "there is no complete checkpoint yet")
        cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return CheckpointSaveError(f"checkpoint {os.path.join(self.directory, str(step))} failed to "
                                   f"save ({type(error).__name__}: {cause}); stopping. {previous}")

    def save(self, state: TrainState, data_iter=None, *, seed: int, force: bool = False) -> bool:
        step = int(jax.device_get(state.step))
        params = nnx.merge_state(state.trainable, state.frozen).to_pure_dict()
        items = {"params": ocp.args.StandardSave(params),
                 "opt_state": ocp.args.StandardSave(state.opt_state),
                 "meta": ocp.args.JsonSave({"step": step, "seed": seed})}
        if self.run_config is not None:
            items["run_config"] = ocp.args.JsonSave(self.run_config)
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        self.check(block=True)  # an earlier failure is reported as itself, not as this save's
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        except Exception as e:  # noqa: BLE001 — a synchronous save's failure, reported the same way
            raise self._failed(step, e) from e
        if saved:
            self._pending = step
            if not self.manager.is_saving_in_progress():  # synchronous saves are done here
                self.check()
        return saved

    def restore(self, state: TrainState, data_iter=None, step: int | None = None) -> tuple[TrainState, dict]:
        """Restore into the shapes and shardings of `state` (and into `data_iter` in place)."""
        step = self.latest_step() if step is None else step
        params_now = nnx.merge_state(state.trainable, state.frozen).to_pure_dict()
        items = {"params": ocp.args.StandardRestore(_abstract(params_now)),
                 "opt_state": ocp.args.StandardRestore(_abstract(state.opt_state)),
                 "meta": ocp.args.JsonRestore()}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        trainable, frozen = split_like(restored["params"], state.trainable, state.frozen)
        new = state.replace(step=jax.device_put(jax.numpy.asarray(restored["meta"]["step"], dtype=state.step.dtype),
                                                state.step.sharding),
                            trainable=trainable, frozen=frozen, opt_state=restored["opt_state"])
        return new, restored["meta"]

    def wait(self) -> None:
        """Block until the last save is written; raises CheckpointSaveError if it failed."""
        self.check(block=True)
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def split_like(pure: dict, trainable: nnx.State, frozen: nnx.State):
    """Put a restored pure dict of all parameters back into the trainable / frozen states."""
    out = []
    for part in (trainable, frozen):
        part = jax.tree.map(lambda x: x, part)  # copy: replace_by_pure_dict works in place
        sub = _select(pure, part.to_pure_dict())
        part.replace_by_pure_dict(sub)
        out.append(part)
    return tuple(out)


def _select(full: dict, like: dict) -> dict:
    if not isinstance(like, dict):
        return full
    return {k: _select(full[k], v) for k, v in like.items()}
