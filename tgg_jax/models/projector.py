"""The mlp2x_gelu projector from fused visual features to the LLM width (SPEC §1, LLaVA-1.5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tgg_jax.sharding import constrain, param_init

# LLaVA initialises the projector like torch.nn.Linear; N(0, 0.02) is close enough for pretraining
# from scratch and keeps every layer in this repo on one convention.
INIT_STD = 0.02


class Projector(nnx.Module):
    """Linear(in -> out) · exact GELU · Linear(out -> out): [..., in_features] -> [..., out_features]."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs, init_std: float = INIT_STD):
        def linear(n_in, n_out, names):
            return nnx.Linear(
                n_in, n_out, dtype=dtype, param_dtype=param_dtype,
                kernel_init=param_init(nnx.initializers.normal(init_std), names),
                bias_init=param_init(nnx.initializers.zeros_init(), names[1:]), rngs=rngs)

        # The hidden axis is split over `tensor`, the input and output over `fsdp` (a standard MLP).
        self.linear_1 = linear(in_features, out_features, ("vision_embed", "mlp"))
        self.linear_2 = linear(out_features, out_features, ("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.linear_1(x), approximate=False)  # LLaVA's nn.GELU(): erf form
        return self.linear_2(constrain(h, (*(None,) * (h.ndim - 1), "act_mlp")))

