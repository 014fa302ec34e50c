"""Name maps between Hugging Face tensors and tgg-jax parameters, as readable tables.

A table is a list of `Rule(hf, tgg, hook)`: `hf` and `tgg` are dotted names where `{i}` stands for
a layer index; `hook` says how the tensor's shape changes on the way in (`to_tgg`) and out
(`to_hf`). Reading is lazy (`read(name)` is called once per tensor, when it is needed), so a 7B
import never holds the checkpoint and the model at the same time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from tgg_jax.models import stacked
from tgg_jax.models.naming import tgg_name


@dataclasses.dataclass(frozen=True)
class Hook:
    """A pair of inverse shape transforms: HF tensor -> tgg array and back."""
    name: str
    to_tgg: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


IDENTITY = Hook("identity", lambda x: x, lambda x: x)
# torch.nn.Linear stores [out, in]; nnx.Linear stores [in, out].
LINEAR = Hook("linear", lambda x: x.T, lambda x: x.T)
# torch.nn.Conv2d stores [out, in, h, w]; nnx.Conv (NHWC) stores [h, w, in, out].
CONV = Hook("conv", lambda x: x.transpose(2, 3, 1, 0), lambda x: x.transpose(3, 2, 0, 1))


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str
    tgg: str
    hook: Hook = IDENTITY


def expand(table: list[Rule], num_layers: int) -> list[tuple[str, str, Hook]]:
    """Every concrete (hf name, tgg name, hook), with `{i}` expanded over the layers."""
    out = []
    for rule in table:
        if "{i}" in rule.hf:
            out += [(rule.hf.format(i=i), rule.tgg.format(i=i), rule.hook) for i in range(num_layers)]
        else:
            out.append((rule.hf, rule.tgg, rule.hook))
    return out


def import_tensors(read: Callable[[str], np.ndarray], table: list[Rule], num_layers: int,
                   hf_prefix: str = "", tgg_prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """Yield (tgg name, array) for every rule, reading each HF tensor lazily."""
    for hf, tgg, hook in expand(table, num_layers):
        yield tgg_prefix + tgg, hook.to_tgg(np.asarray(read(hf_prefix + hf)))


def export_tensors(get: Callable[[str], np.ndarray], table: list[Rule], num_layers: int,
                   hf_prefix: str = "", tgg_prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """Yield (HF name, array) for every rule, fetching each tgg parameter lazily."""
    for hf, tgg, hook in expand(table, num_layers):
        yield hf_prefix + hf, np.ascontiguousarray(hook.to_hf(np.asarray(get(tgg_prefix + tgg))))


def load_into(module, tensors: Mapping[str, np.ndarray] | Iterator[tuple[str, np.ndarray]],
              strict: bool = True) -> None:
    """Assign arrays to an nnx module's parameters by tgg name, checking every shape.

    With `strict`, every parameter of the module must be assigned exactly once. A per-layer
    name of a stacked module ('layers.3.mlp.up_proj.kernel') assigns that layer's slice.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    state = nnx.state(module, nnx.Param)
    flat = {tgg_name(path): var for path, var in nnx.to_flat_state(state)}
    seen = set()
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, array in items:
        layer = stacked.per_layer_name(name) if name not in flat else None
        if name not in flat and (layer is None or layer[0] not in flat):
            raise KeyError(f"no parameter named {name!r} in {type(module).__name__}")
        var = flat[layer[0] if layer else name]
        current = var.get_value()
        if layer and isinstance(current, jax.ShapeDtypeStruct):  # an abstract module: slices need a buffer
            current = jnp.zeros(current.shape, current.dtype)
        want = current.shape[1:] if layer else current.shape
        if tuple(want) != tuple(array.shape):
            raise ValueError(f"shape mismatch for {name}: checkpoint {tuple(array.shape)}, "
                             f"model {tuple(want)}")
        value = jnp.asarray(array, dtype=current.dtype)
        var.set_value(current.at[layer[1]].set(value) if layer else value)
        seen.add((layer[0], layer[1]) if layer else (name, None))
    expected = {(n, i) for n, var in flat.items()
                for i in (range(var.get_value().shape[0]) if stacked.is_stacked_param(var) else [None])}
    missing = sorted(expected - seen, key=str)
    if strict and missing:
        raise KeyError(f"{len(missing)} parameters were not assigned, e.g. {missing[:5]}")
