"""Grouped-query self-attention with segment masking and a static-shape KV cache.

One masking rule covers right padding, left padding and sequence packing: a query attends to the
keys of its own segment (`segment_ids`, 0 = padding) at the same or an earlier slot. Padding
queries attend to earlier padding, so no softmax row is empty and nothing becomes NaN; real tokens
never see padding because its segment differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from tgg_jax.models.rope import apply_rotary
from tgg_jax.sharding import constrain, param_init

# HF Qwen2's initializer_range: N(0, 0.02) for every Linear and Embedding.
INIT_STD = 0.02


def linear(in_features: int, out_features: int, names: Sequence[str], *, use_bias: bool,
           dtype, param_dtype, rngs: nnx.Rngs, std: float = INIT_STD) -> nnx.Linear:
    """nnx.Linear (kernel [in, out], N(0, std)) with logical axis names `names` = (in_axis, out_axis)."""
    return nnx.Linear(
        in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=param_init(nnx.initializers.normal(std), names),
        bias_init=param_init(nnx.initializers.zeros_init(), names[1:]), rngs=rngs)


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer, in fixed-size buffers written at `index`.

    k, v: one [batch, max_len, num_kv_heads, head_dim] array per layer (rotary already applied).
    segment_ids: [batch, max_len] int32, the segment of each written slot (0 = padding / empty).
    index: [] int32, the next slot to write; the same for every row (prompts are left-padded).
    """
    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    index: jax.Array

    @classmethod
    def init(cls, num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int,
             dtype=jnp.float32) -> KVCache:
        """An empty cache (all slots segment 0, index 0)."""
        zeros = lambda: jnp.zeros((batch, max_len, num_kv_heads, head_dim), dtype)  # noqa: E731
        return cls(k=tuple(zeros() for _ in range(num_layers)),
                   v=tuple(zeros() for _ in range(num_layers)),
                   segment_ids=jnp.zeros((batch, max_len), jnp.int32),
                   index=jnp.zeros((), jnp.int32))

    @property
    def max_len(self) -> int:
        return self.segment_ids.shape[1]


def target_platform() -> str:
    """"gpu", "tpu" or "cpu": the platform of the mesh being compiled for (jax.set_mesh, also an
    ahead-of-time topology's), else the default backend. A step compiled on a CPU host for an
    H100 mesh must choose the H100's kernels, not the host's."""
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    platform = device.platform if device is not None and device.platform else jax.default_backend()
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None = None,
           scale: float | None = None) -> jax.Array:
    """jax.nn.dot_product_attention: cuDNN's fused kernel when compiling for NVIDIA GPUs with
    bf16/fp16 inputs (JAX 0.10 never picks it by itself), XLA elsewhere and wherever cuDNN
    refuses the shapes. JAX checks cuDNN against the local GPU while tracing, so a GPU step
    compiled on a host without one falls back to XLA.

    q [B, T, N, H], k/v [B, S, K, H] (K divides N: GQA), mask bool broadcastable to [B, N, T, S].
    """
    if target_platform() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError, TypeError):
            pass  # shapes or masks this cuDNN build does not support
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=None)


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                   q_offset: jax.Array | int = 0) -> jax.Array:
    """Which keys each query may see: [B, T] x [B, S] -> bool [B, 1, T, S].

    Query t sits at slot q_offset + t, key s at slot s; a query sees keys of its own segment at the
    same or an earlier slot. Within a segment positions grow with slots, so this is causal by position.
    """
    q_slot = q_offset + jnp.arange(q_segment_ids.shape[1])
    kv_slot = jnp.arange(kv_segment_ids.shape[1])
    causal = kv_slot[None, :] <= q_slot[:, None]
    same_segment = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    return (same_segment & causal[None])[:, None]


def write_cache(buffer: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """Write new [B, T, K, H] into buffer [B, S, K, H] at slots index..index+T (static shapes)."""
    buffer = jax.lax.dynamic_update_slice(buffer, new.astype(buffer.dtype), (0, index, 0, 0))
    return constrain(buffer, ("cache_batch", "cache_seq", "cache_kv_heads", "head_dim"))


class Attention(nnx.Module):
    """GQA self-attention: biased q/k/v projections, rotary, unbiased output projection (HF Qwen2)."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
                 dtype, param_dtype, rngs: nnx.Rngs, init_std: float = INIT_STD):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, std=init_std)
        self.q_proj = linear(hidden_size, num_heads * head_dim, ("embed", "q_heads"), use_bias=True, **kw)
        self.k_proj = linear(hidden_size, num_kv_heads * head_dim, ("embed", "kv_heads"), use_bias=True, **kw)
        self.v_proj = linear(hidden_size, num_kv_heads * head_dim, ("embed", "kv_heads"), use_bias=True, **kw)
        self.o_proj = linear(num_heads * head_dim, hidden_size, ("q_heads", "embed"), use_bias=False, **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
                 kv: tuple[jax.Array, jax.Array] | None = None, index: jax.Array | None = None):
        """x [B, T, D], rotary tables [B, T, head_dim], mask [B, 1, T, S] -> ([B, T, D], kv).

        Without a cache S = T. With one, kv = this layer's (k, v) buffers [B, S=max_len, K, H]:
        the T new keys/values are written at `index` and the queries attend over the whole buffer.
        """
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = constrain(apply_rotary(q, cos, sin), ("batch", "seq", "act_heads", "head_dim"))
        k = constrain(apply_rotary(k, cos, sin), ("batch", "seq", "act_kv_heads", "head_dim"))
        v = constrain(v, ("batch", "seq", "act_kv_heads", "head_dim"))
        if kv is not None:
            kv = (write_cache(kv[0], k, index), write_cache(kv[1], v, index))
            k, v = kv[0].astype(q.dtype), kv[1].astype(q.dtype)
        out = attend(q, k, v, mask=mask)
        out = constrain(out, ("batch", "seq", "act_heads", "head_dim"))
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)), kv
