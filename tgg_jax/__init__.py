"""tgg-jax: TinyGroundingGPT in JAX / Flax NNX."""

from flax import nnx as _nnx

# Parameters are created unsharded (or abstractly under nnx.eval_shape) and placed on the mesh
# explicitly from the logical-axis rules in tgg_jax.sharding, so building a model never needs an
# ambient mesh.
_nnx.use_eager_sharding(False)

__version__ = "0.1.0"
