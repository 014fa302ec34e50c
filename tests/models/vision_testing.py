"""Helpers shared by the model tests: random HF weights, saved checkpoints, per-layer names."""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx
from safetensors.numpy import load_file

from tgg_jax.models import stacked
from tgg_jax.models.naming import tgg_name


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter (so norms, biases and tokens are not 1/0), LayerScale to U(0.1, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.copy_(0.1 + 1.4 * torch.rand(p.shape, generator=g))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def saved_tensors(model, directory) -> dict[str, np.ndarray]:
    """The tensors exactly as transformers writes them to model.safetensors (checkpoint names)."""
    model.save_pretrained(directory)
    return load_file(f"{directory}/model.safetensors")


def images(seed: int, batch: int, height: int, width: int) -> tuple[torch.Tensor, np.ndarray]:
    """The same random normalised images as torch NCHW and numpy NHWC."""
    nchw = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return nchw, nchw.permute(0, 2, 3, 1).numpy()


def abstract(tower_class, config):
    """A tower with shapes only (nothing materialised); load_into fills in real arrays."""
    return nnx.eval_shape(lambda: tower_class(config, rngs=nnx.Rngs(0)))


def params_by_name(module) -> dict[str, nnx.Variable]:
    return {tgg_name(path): var for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def param_count(abstract_module) -> int:
    return sum(int(np.prod(v.get_value().shape)) for v in params_by_name(abstract_module).values())


def per_layer_params(module) -> dict[str, np.ndarray]:
    """Parameters by per-layer name whatever the layout: a stacked tensor
    ('layers.mlp.fc1.kernel' [L, ...]) gives 'layers.0.mlp.fc1.kernel', ... (what export reads)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        name, value = tgg_name(path), np.asarray(var.get_value())
        if stacked.is_stacked_param(var):
            parts = name.split(".")
            k = parts.index("layers") + 1
            out.update({".".join([*parts[:k], str(i), *parts[k:]]): value[i] for i in range(value.shape[0])})
        else:
            out[name] = value
    return out
