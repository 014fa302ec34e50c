"""Rotary position embeddings in Hugging Face's "rotate_half" layout (Qwen2, Llama).

The head dimension is split in two halves [x1, x2] that rotate together by the same angle, not
interleaved pairs; imported HF q/k weights assume this layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inverse_frequencies(head_dim: int, theta: float) -> jax.Array:
    """theta^(-2i/d) for i < d/2, in float32 as HF computes them: [head_dim // 2]."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return 1.0 / (theta ** exponents)


def rotary_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin of position x frequency, halves repeated: [B, T] -> 2 x [B, T, head_dim] float32."""
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies(head_dim, theta)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def rotate_half(x: jax.Array) -> jax.Array:
    """[x1, x2] -> [-x2, x1] on the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate queries or keys x [B, T, heads, head_dim] by tables [B, T, head_dim].

    Computed in float32 and cast back to x's dtype (HF casts the tables to bf16 first; doing the
    product in f32 is slightly more accurate and identical in f32).
    """
    x32 = x.astype(jnp.float32)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)
