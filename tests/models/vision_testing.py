"""Helpers shared by the model tests: random HF weights, saved checkpoints, per-layer names."""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx
from safetensors.numpy import load_file

from tgg_jax.convert.mapping import export_tensors, import_tensors, load_into
from tgg_jax.models import stacked
from tgg_jax.models.naming import tgg_name


# Jitted: one compile per input shape instead of one per op.
hidden_states = nnx.jit(lambda tower, pixels: tower(pixels))
patch_features = nnx.jit(lambda tower, pixels: tower.features(pixels, select_layer=-2, select_feature="patch"))
cls_patch_features = nnx.jit(lambda tower, pixels: tower.features(pixels, select_layer=-2,
                                                                   select_feature="cls_patch"))


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


def check_scanned_tower(tower, table, checkpoint: dict[str, np.ndarray], tower_names: set[str],
                        ref: list[np.ndarray], nhwc: np.ndarray) -> None:
    """A stacked tower (abstract, 3 layers) loaded from the HF `checkpoint` through `table`:
    every hidden state is HF's (`ref`, for the images `nhwc`), export gives back exactly the
    tower's tensors (`tower_names`) bit for bit, and the penultimate features scan the first
    layers only (the last one is poisoned with NaN)."""
    load_into(tower, import_tensors(checkpoint.__getitem__, table, num_layers=3))
    assert tower.layers.mlp.fc1.kernel.shape[0] == 3
    ours = hidden_states(tower, nhwc)
    assert len(ours) == len(ref) == 4
    for i, (a, b) in enumerate(zip(ours, ref)):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4, rtol=0, err_msg=f"hidden_states[{i}]")
    exported = dict(export_tensors(per_layer_params(tower).__getitem__, table, num_layers=3))
    assert set(exported) == tower_names
    for name, value in exported.items():
        assert np.array_equal(np.asarray(value), checkpoint[name]), name
    for var in params_by_name(tower.layers).values():
        var.set_value(var.get_value().at[-1].set(np.nan))
    np.testing.assert_allclose(np.asarray(patch_features(tower, nhwc)), ref[-2][:, 1:], atol=1e-4, rtol=0)
