"""A tgg-jax parameter checkpoint read a layer (or a stacked tensor) at a time (Orbax partial
restore), as host numpy arrays: what the export streams into safetensors without ever holding
the model. Orbax merges the per-host files of a checkpoint written by several processes, so one
process reads it."""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from tgg_jax.checkpoint import PARAMS_DIR, abstract_model, latest_if_run, load_config
from tgg_jax.models import stacked
from tgg_jax.models.naming import tgg_name, tgg_path
from tgg_jax.models.tgg import scanned_parts, with_scan_layers


def read_group(name: str, scanned: dict[str, bool] | None = None) -> str:
    """What the reader restores together with `name`: its whole layer ('llm.layers.3') for a
    layer's parameter, the stacked tensor ('llm.layers.mlp.up_proj.kernel') for a slice of one
    (`scanned` parts), else the parameter alone (embeddings and heads are the largest tensors)."""
    layer = stacked.per_layer_name(name)
    if layer is not None and (scanned or {}).get(name.split(".")[0]):
        return layer[0]
    parts = name.split(".")
    for k, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: k + 1])
    return name


class CheckpointReader:
    """Parameters of a tgg-jax checkpoint as host numpy arrays, one layer's tensor at a time.

    Names are per layer whatever the stored layout ('llm.layers.0.mlp.up_proj.kernel'). For
    layers stored one by one the reader restores that whole layer (Orbax partial restore);
    for stacked layers, the stacked tensor. It hands the tensors out one by one, forgetting
    each as it goes; shapes are checked against the config. Asked for group by group (a
    layer's tensors together, or a stacked tensor's layers together: `by_layer`), it restores
    each group once and holds at most one.
    """

    def __init__(self, checkpoint: str):
        path = latest_if_run(checkpoint)  # a run's checkpoints/ -> its latest step
        self.config = load_config(path)
        self.params_dir = os.path.join(path, PARAMS_DIR)
        if not os.path.isdir(self.params_dir):
            raise FileNotFoundError(f"{self.params_dir}: missing parameter tree "
                                    f"({checkpoint} is not a tgg-jax parameter checkpoint)")
        self.scanned = scanned_parts(self.config)
        per_layer = nnx.state(abstract_model(with_scan_layers(self.config, False)), nnx.Param)
        self.shapes = {tgg_name(p): v.get_value() for p, v in nnx.to_flat_state(per_layer)}
        stored = nnx.state(abstract_model(self.config), nnx.Param)
        self._stored = {tgg_name(p): v.get_value() for p, v in nnx.to_flat_state(stored)}
        self._checkpointer = ocp.PyTreeCheckpointer()
        self._pending: dict[str, np.ndarray] = {}

    def by_layer(self, part: str) -> bool:
        """Whether `part`'s tensors are best read layer by layer (else tensor by tensor)."""
        return not self.scanned.get(part, False)

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._pending:
            self._pending = {}  # let go of what is left of the previous group first
            group = read_group(name, self.scanned)
            if group in self._stored and group not in self.shapes:  # a stacked tensor
                (value,) = self._restore([group]).values()
                self._pending = {n: value[stacked.per_layer_name(n)[1]] for n in self.shapes
                                 if read_group(n, self.scanned) == group}
            else:
                self._pending = self._restore([n for n in self.shapes
                                               if read_group(n, self.scanned) == group])
        return self._pending.pop(name)

    def _restore(self, names: list[str]) -> dict[str, np.ndarray]:
        item, args = {}, {}
        for name in names:
            *parents, leaf = tgg_path(name)
            node_item, node_args = item, args
            for key in parents:
                node_item, node_args = node_item.setdefault(key, {}), node_args.setdefault(key, {})
            node_item[leaf] = jax.ShapeDtypeStruct(self._stored[name].shape, self._stored[name].dtype)
            node_args[leaf] = ocp.RestoreArgs(restore_type=np.ndarray)
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # Orbax logs ~6 INFO lines per restore
        try:
            restored = self._checkpointer.restore(self.params_dir, args=ocp.args.PyTreeRestore(
                item=item, restore_args=args, partial_restore=True))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.params_dir}: cannot read {read_group(names[0], self.scanned)}: "
                             f"{e}") from e
        finally:
            logging.set_verbosity(verbosity)
        out = {}
        for name in names:
            value = restored
            for key in tgg_path(name):
                value = value.get(key) if isinstance(value, dict) else None
            if not isinstance(value, np.ndarray):  # a partial restore hands back absent leaves as given
                raise ValueError(f"{self.params_dir}: parameter {name} is not in the checkpoint "
                                 f"(does tgg_config.json belong to it?)")
            want = self._stored[name].shape
            if tuple(value.shape) != tuple(want):
                raise ValueError(f"{self.params_dir}: {name} has shape {tuple(value.shape)}, "
                                 f"its tgg_config.json implies {tuple(want)}")
            out[name] = value
        return out
