"""The one place that knows the mesh: logical axis names -> mesh axes `data`/`fsdp`/`tensor`.

Layers annotate parameters with logical names (`nnx.with_partitioning(init, ("embed", "mlp"))`)
and activations with `constrain(x, ("batch", "seq", "embed"))`; they never mention devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or axes, or None = replicated). Parameters shard their large
# input dimension over `fsdp` (ZeRO-3 style) and their head/MLP dimension over `tensor`.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_batch", ("data", "fsdp")),
    ("cache_seq", None),
    ("cache_kv_heads", "tensor"),
    ("head_dim", None),
    # parameters
    ("layers", None),  # the stacked layers axis (scan_layers): every device holds every layer's shard
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_mlp", "tensor"),
    ("vision_pos", None),
    ("conv_in", None),
    ("conv_h", None),
    ("conv_w", None),
)


def make_mesh(shape: dict[str, int] | Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `data`, `fsdp`, `tensor`; one entry may be -1 to take the remaining devices.

    Raises ValueError (before anything compiles) if the sizes do not divide the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [shape[a] for a in MESH_AXES] if isinstance(shape, dict) else list(shape)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh needs {len(MESH_AXES)} sizes for axes {MESH_AXES}, got {sizes}")
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if known <= 0 or len(devices) % known:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {len(devices)} available devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} uses {int(np.prod(sizes))} devices but "
            f"{len(devices)} are available")
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_to_spec(names: Sequence[str | None], rules=LOGICAL_AXIS_RULES) -> PartitionSpec:
    """PartitionSpec for a tuple of logical axis names under `rules`."""
    table = dict(rules)
    return PartitionSpec(*(None if n is None else table.get(n) for n in names))


def state_shardings(state: nnx.State, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """NamedShardings for an (abstract) nnx.State, from each variable's logical axis names."""
    with nnx.logical_axis_rules(rules):
        return nnx.get_named_sharding(state, mesh)


def constrain(x: jax.Array, names: Sequence[str | None], rules=LOGICAL_AXIS_RULES) -> jax.Array:
    """Sharding constraint by logical names; a no-op outside a mesh context (single device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, rules))


def param_init(init, names: Sequence[str | None]):
    """An initializer annotated with logical axis names (what every layer uses for its params)."""
    return nnx.with_partitioning(init, tuple(names))
