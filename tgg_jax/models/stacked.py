"""Layers stored stacked and run with one `jax.lax.scan` (`scan_layers` of each model config).

A scanned block is one layer module whose every parameter has a leading `layers` axis
(`nnx.vmap` at construction); the forward pass scans that stack, so XLA compiles the layer once
instead of once per layer. The `layers` axis is replicated on the mesh (sharding.py).

Checkpoints name a stacked parameter without the index (`llm.layers.mlp.up_proj.kernel`,
[L, ...]) and an unstacked one with it (`llm.layers.3.mlp.up_proj.kernel`); `per_layer_name`
maps one onto the other, and `relayout` converts a whole parameter tree between the two.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

LAYER_AXIS = "layers"


def build(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs,
          scan: bool) -> nnx.Module:
    """`num_layers` layers from `make_layer`: an nnx.List, or (scan) one stacked module."""
    if not scan:
        return nnx.List([make_layer(rngs) for _ in range(num_layers)])

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYER_AXIS})
    def make(rngs):
        return make_layer(rngs)

    return make(rngs)


def is_stacked(layers: nnx.Module) -> bool:
    return not isinstance(layers, nnx.List)


def unstacked(layers: nnx.Module, length: int | None = None) -> list[nnx.Module]:
    """The first `length` layers as separate modules (views: writing to them changes nothing),
    for the code that runs layer by layer (KV-cache decoding, attention maps)."""
    if not is_stacked(layers):
        return list(layers)[:length]
    graphdef, state = nnx.split(layers)
    n = jax.tree.leaves(state)[0].shape[0] if length is None else length
    return [nnx.merge(graphdef, jax.tree.map(lambda v, i=i: v[i], state)) for i in range(n)]


def scan(layers: nnx.Module, x: Any, body: Callable[[nnx.Module, Any], tuple[Any, Any]], *,
         length: int | None = None, policy=None):
    """Run `body(layer, x) -> (x, y)` over the first `length` stacked layers with one scan,
    under jax.checkpoint(policy) unless policy is None. Returns (x, ys stacked over layers).

    The layer goes in as (graphdef, state) and nothing is written back (nnx.scan would write
    its parameters back, which fails when they are frozen values of an outer trace)."""
    graphdef, state = nnx.split(layers)
    if length is not None:
        state = jax.tree.map(lambda v: v[:length], state)

    def step(carry, layer_state):
        return body(nnx.merge(graphdef, layer_state), carry)

    if policy is not None:
        # Inside a scan the body is not CSE'd across iterations, so the remat barrier is not needed.
        step = jax.checkpoint(step, policy=policy, prevent_cse=False)
    return jax.lax.scan(step, x, state)


def is_stacked_param(var: nnx.Variable) -> bool:
    """Whether a parameter carries the leading layers axis (its first logical axis name)."""
    names = var.get_metadata().get("out_sharding") or ()
    return bool(names) and names[0] == LAYER_AXIS


def stacked_groups(layers: nnx.Module) -> list[nnx.Module]:
    """The modules whose parameters change together: each layer, or the one stacked module
    (its parameters with the leading layers axis). For in-place edits of a fresh model."""
    return [layers] if is_stacked(layers) else list(layers)


_LAYER_NAME = re.compile(r"^(.*\blayers)\.(\d+)\.(.+)$")


def per_layer_name(name: str) -> tuple[str, int] | None:
    """'llm.layers.3.mlp.up_proj.kernel' -> ('llm.layers.mlp.up_proj.kernel', 3); None for a
    name outside the layers."""
    m = _LAYER_NAME.match(name)
    return None if m is None else (f"{m.group(1)}.{m.group(3)}", int(m.group(2)))


def _stack(block: dict) -> dict:
    layers = [block[i] for i in sorted(block)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *layers)


def _unstack(block: dict) -> dict:
    n = jax.tree.leaves(block)[0].shape[0]
    return {i: jax.tree.map(lambda v, i=i: v[i], block) for i in range(n)}


def _block_is_stacked(block: dict) -> bool:
    return not all(isinstance(k, int) for k in block)


def relayout(params: dict, scanned: dict[str, bool]) -> dict:
    """A parameter pure dict ({'llm': {'layers': ...}, ...}) with each part's layers stacked or
    unstacked as `scanned` says ({'llm': True, 'clip': False, ...}); parts already so are kept."""
    out = dict(params)
    for part, scan_it in scanned.items():
        if part not in out or "layers" not in out[part]:
            continue
        block = out[part]["layers"]
        if _block_is_stacked(block) != scan_it:
            out[part] = {**out[part], "layers": _stack(block) if scan_it else _unstack(block)}
    return out
