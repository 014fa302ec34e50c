"""Parameter checkpoints: an Orbax pytree of parameters next to the model config as JSON.

Layout of a parameter checkpoint directory (written by `tgg-convert import-hf` and, per step, by
the trainer):

    CKPT/params/            Orbax PyTree checkpoint of the nnx parameter state (pure dict)
    CKPT/tgg_config.json    TGGConfig.to_dict()

Restoring always goes through an abstract target built from the config, so the tree structure
(and, when shardings are given, the placement on a mesh) comes from the model, not the files.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from tgg_jax.models import stacked
from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT, scanned_parts
from tgg_jax.sharding import state_shardings

CONFIG_FILE = "tgg_config.json"
PARAMS_DIR = "params"


def abstract_model(config: TGGConfig) -> TinyGroundingGPT:
    """The model with ShapeDtypeStruct leaves: shapes and logical axes, no memory."""
    return nnx.eval_shape(lambda: TinyGroundingGPT(config, rngs=nnx.Rngs(0)))


def save_config(path: str, config: TGGConfig) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(config.to_dict(), f, indent=1)


def load_config(path: str) -> TGGConfig:
    """The model config beside `path`, or one level up (a trainer step dir, checkpoints/<step>/)."""
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(file):
        file = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{os.path.join(path, CONFIG_FILE)}: missing (nor one level up); "
                                f"{path} is not a tgg-jax parameter checkpoint")
    with open(file) as f:
        return TGGConfig.from_dict(json.load(f))


def resolve_checkpoint(path: str) -> str:
    """A parameter checkpoint dir, or a run's checkpoints/ dir (-> its latest step)."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, "params")):
        return path
    steps = sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
    if not steps:
        raise FileNotFoundError(f"{path}: neither a parameter checkpoint nor a checkpoints/ directory")
    return os.path.join(path, str(steps[-1]))


def latest_if_run(path: str) -> str:
    """A run's checkpoints/ directory -> its latest step; any other path as it is (so that what
    is wrong with it is reported by whoever reads it)."""
    try:
        return resolve_checkpoint(path)
    except FileNotFoundError:
        return os.path.abspath(os.path.expanduser(path))


def save_params(path: str, params: dict, config: TGGConfig) -> None:
    """Write a parameter checkpoint (params: nnx pure dict of arrays, host or device)."""
    path = os.path.abspath(path)
    save_config(path, config)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(path, PARAMS_DIR), params, force=True)
    checkpointer.wait_until_finished()


def params_target(config: TGGConfig, shardings=None):
    """Abstract pure-dict target for restoring; with `shardings` (same tree) the arrays land
    sharded on the mesh, without them whole on this process's first device (whatever topology
    wrote the checkpoint)."""
    state = nnx.state(abstract_model(config), nnx.Param).to_pure_dict()
    if shardings is None:
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), state)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def load_params(path: str, shardings=None, scanned: dict[str, bool] | None = None
                ) -> tuple[dict, TGGConfig]:
    """Restore (params pure dict, config) from a parameter checkpoint directory.

    `scanned` ({'llm': True, ...}, models/tgg.scanned_parts) asks for that layout of the layers
    whatever the checkpoint stores (`shardings` are then the asked layout's): the tree is
    restored as stored and restacked on device, briefly holding both layouts."""
    path = os.path.abspath(path)
    config = load_config(path)
    params_dir = os.path.join(path, PARAMS_DIR)
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"{params_dir}: missing parameter tree")
    if scanned is None or scanned == scanned_parts(config):
        return ocp.StandardCheckpointer().restore(params_dir, params_target(config, shardings)), config
    stored_shardings = None
    if shardings is not None:
        mesh = jax.tree.leaves(shardings)[0].mesh
        stored_shardings = state_shardings(nnx.state(abstract_model(config), nnx.Param), mesh).to_pure_dict()
    restored = ocp.StandardCheckpointer().restore(params_dir, params_target(config, stored_shardings))
    convert = lambda p: stacked.relayout(p, scanned)  # noqa: E731
    params = convert(restored) if shardings is None else jax.jit(
        convert, out_shardings=shardings, donate_argnums=0)(restored)
    return params, config.replace(**{part: dataclasses.replace(getattr(config, part), scan_layers=s)
                                     for part, s in scanned.items()})


def to_host(tree):
    return jax.tree.map(np.asarray, tree)
