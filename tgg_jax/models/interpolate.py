"""Bicubic resizing that reproduces `torch.nn.functional.interpolate(mode="bicubic")` exactly.

HF's DINOv2 resizes its 37x37 position grid to the input's patch grid (24x24 at 336 px) with torch's
bicubic: Keys cubic with a = -0.75, no antialiasing, `align_corners=False`, out-of-range taps clamped
to the border. `jax.image.resize` uses a = -0.5 and antialiases when shrinking, so imported weights
would give different features. Sizes are static, so each axis becomes a small [out, in] matrix built
in numpy at trace time and applied with einsum.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# torch's cubic convolution coefficient (aten/src/ATen/native/UpSample.h, get_cubic_upsample_coefficients).
CUBIC_A = np.float32(-0.75)


def _cubic_near(x: np.ndarray) -> np.ndarray:
    """Keys kernel for |x| <= 1 (torch's cubic_convolution1)."""
    a = CUBIC_A
    return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic_far(x: np.ndarray) -> np.ndarray:
    """Keys kernel for 1 < |x| < 2 (torch's cubic_convolution2)."""
    a = CUBIC_A
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float32 matrix M with `resized = M @ signal` along one axis.

    Follows torch's CPU kernel step by step, in float32 as torch does for float32 input:
    scale = in/out, source = scale * (dst + 0.5) - 0.5 (not clamped for cubic), four taps around
    floor(source) with weights from the fractional part, tap indices clamped to [0, in_size - 1].
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"bicubic resize needs positive sizes, got {in_size} -> {out_size}")
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    source = scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5)
    # torch's guard_index_and_lambda: index at most in_size - 1, fraction clipped to [0, 1].
    index = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    t = np.clip(source - index.astype(f32), f32(0), f32(1)).astype(f32)
    weights = np.stack([_cubic_far(t + f32(1)), _cubic_near(t),
                        _cubic_near(f32(1) - t), _cubic_far(f32(2) - t)], axis=1)  # [out, 4]
    taps = np.clip(index[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)  # [out, 4]
    matrix = np.zeros((out_size, in_size), np.float32)
    # Clamped taps that land on the same border pixel add up, as torch's repeated reads do.
    np.add.at(matrix, (np.repeat(np.arange(out_size), 4), taps.reshape(-1)), weights.reshape(-1))
    return matrix


def resize_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resize the two spatial axes of channels-last `x` like torch's bicubic interpolate.

    x: [..., H, W, C] -> [..., size[0], size[1], C], computed in float32 and returned in x's dtype
    (equal to `F.interpolate(x_nchw, size=size, mode="bicubic", align_corners=False)`).
    """
    if x.ndim < 3:
        raise ValueError(f"resize_bicubic expects [..., H, W, C], got shape {x.shape}")
    in_h, in_w = x.shape[-3], x.shape[-2]
    out_h, out_w = size
    rows = jnp.asarray(bicubic_matrix(in_h, out_h))
    cols = jnp.asarray(bicubic_matrix(in_w, out_w))
    y = x.astype(jnp.float32)
    # HIGHEST so that TPU/GPU default matmul precision (bf16 passes) does not perturb the weights.
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,...hwc->...owc", rows, y, precision=hi)
    y = jnp.einsum("pw,...owc->...opc", cols, y, precision=hi)
    return y.astype(x.dtype)
