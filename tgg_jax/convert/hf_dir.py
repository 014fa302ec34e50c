"""Lazy, safe reading of local Hugging Face model directories (config.json + safetensors).

Weights are read one tensor at a time from safetensors (single file or sharded with an index);
pickle-based checkpoints (`.bin`, `.pt`, `.pth`, `.ckpt`) are refused and never opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import jax
import numpy as np

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A Hugging Face directory that cannot be imported; the message names the file."""


class HFCheckpoint:
    """A local HF model directory: its config and lazily-read tensors.

    Args:
      path: directory holding config.json and model.safetensors or
        model.safetensors.index.json + shards.
      model_types: accepted `model_type` values of config.json (e.g. ("qwen2",)).
      architectures: if given, at least one of config.json's `architectures` must be among them.
    """

    def __init__(self, path: str, model_types: Iterable[str], architectures: Iterable[str] | None = None):
        self.path = path
        if not os.path.isdir(path):
            raise CheckpointError(f"{path}: not a directory (expected a Hugging Face model directory)")
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise CheckpointError(f"{config_file}: missing (every Hugging Face model directory has one)")
        try:
            with open(config_file) as f:
                self.config = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({e})") from e
        model_types = tuple(model_types)
        if self.config.get("model_type") not in model_types:
            raise CheckpointError(f"{config_file}: model_type is {self.config.get('model_type')!r}, "
                                  f"expected one of {model_types}")
        if architectures is not None:
            archs = self.config.get("architectures") or []
            wanted = tuple(architectures)
            if archs and not set(archs) & set(wanted):
                raise CheckpointError(f"{config_file}: architectures {archs} is not one of {wanted}")
        self._files = self._index()

    def _index(self) -> dict[str, str]:
        """tensor name -> safetensors file holding it."""
        index_file = os.path.join(self.path, "model.safetensors.index.json")
        single = os.path.join(self.path, "model.safetensors")
        if os.path.isfile(index_file):
            with open(index_file) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index_file}: no 'weight_map'")
            files = {name: os.path.join(self.path, shard) for name, shard in weight_map.items()}
            for shard in sorted(set(files.values())):
                if not os.path.isfile(shard):
                    raise CheckpointError(f"{shard}: listed in {index_file} but missing")
            return files
        if os.path.isfile(single):
            from safetensors import safe_open
            with safe_open(single, framework="numpy") as f:
                return {name: single for name in f.keys()}
        pickles = sorted(n for n in os.listdir(self.path) if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(
                f"{os.path.join(self.path, pickles[0])}: pickle-based checkpoint refused (it could run "
                "arbitrary code when loaded). Convert it to safetensors first, e.g. "
                "`model.save_pretrained(dir, safe_serialization=True)` in a trusted environment.")
        raise CheckpointError(f"{self.path}: no model.safetensors or model.safetensors.index.json")

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def names(self) -> list[str]:
        return sorted(self._files)

    def read(self, name: str) -> np.ndarray:
        """One tensor as a host numpy array (bf16 stays bf16, via ml_dtypes)."""
        if name not in self._files:
            raise CheckpointError(f"{self.path}: tensor {name!r} not found in the checkpoint")
        from safetensors import safe_open
        # The numpy backend of safetensors cannot express bfloat16; the flax one can. Keep the
        # read on the CPU so an accelerator never sees the raw checkpoint.
        with jax.default_device(jax.devices("cpu")[0]):
            with safe_open(self._files[name], framework="flax") as f:
                return np.asarray(f.get_tensor(name))
