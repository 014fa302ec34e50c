"""Pieces the CLIP and DINOv2 towers share: patch convolution, self-attention, MLP, LayerNorm.

Both are pre-norm ViTs with the same multi-head attention (biased q/k/v/out projections, scale
head_dim**-0.5, no mask) and the same two-layer MLP; they differ in activation, LayerScale and
embeddings, which live in clip.py and dinov2.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from flax import nnx

from tgg_jax.models import stacked
from tgg_jax.models.attention import attend
from tgg_jax.sharding import constrain, param_init

# HF's initializer_range for both towers; real weights are always imported, this only shapes tests.
INIT_STD = 0.02

# HF ACT2FN names -> functions. "gelu" is the exact (erf) form; quick_gelu is CLIP's x * sigmoid(1.702 x).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported vision activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return name


def dense(in_features: int, out_features: int, names: Sequence[str], *, use_bias: bool = True,
          dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """nnx.Linear (kernel [in, out]) with logical axis names `names` = (in_axis, out_axis)."""
    return nnx.Linear(
        in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=param_init(nnx.initializers.normal(INIT_STD), names),
        bias_init=param_init(nnx.initializers.zeros_init(), names[1:]), rngs=rngs)


def layer_norm(dim: int, eps: float, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """nnx.LayerNorm (scale, bias) with torch's two-pass variance."""
    return nnx.LayerNorm(
        dim, epsilon=eps, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False,
        scale_init=param_init(nnx.initializers.ones_init(), ("norm",)),
        bias_init=param_init(nnx.initializers.zeros_init(), ("norm",)), rngs=rngs)


def patch_conv(patch_size: int, in_channels: int, dim: int, *, use_bias: bool, dtype, param_dtype,
               rngs: nnx.Rngs) -> nnx.Conv:
    """Non-overlapping patch embedding: kernel [p, p, C, D] (HWIO), stride p, remainder dropped."""
    return nnx.Conv(
        in_channels, dim, kernel_size=(patch_size, patch_size), strides=(patch_size, patch_size),
        padding="VALID", use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=param_init(nnx.initializers.normal(INIT_STD), ("conv_h", "conv_w", "conv_in", "vision_embed")),
        bias_init=param_init(nnx.initializers.zeros_init(), ("vision_embed",)), rngs=rngs)


def square_size(value, field: str) -> int:
    """HF allows (h, w) sizes; the towers support square ones only."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"only square {field} is supported, got {value}")
        return int(value[0])
    return int(value)


def check_nhwc(pixel_values: jax.Array, channels: int) -> None:
    if pixel_values.ndim != 4 or pixel_values.shape[-1] != channels:
        raise ValueError(f"pixel_values must be [batch, height, width, {channels}] (NHWC), "
                         f"got shape {pixel_values.shape}")


def embed_patches(conv: nnx.Conv, pixel_values: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    """[B, H, W, C] -> ([B, h*w, D] in row-major patch order, (h, w)), h = H // p, w = W // p."""
    check_nhwc(pixel_values, conv.in_features)
    patches = conv(pixel_values)
    b, h, w, d = patches.shape
    return patches.reshape(b, h * w, d), (h, w)


class VisionAttention(nnx.Module):
    """Bidirectional multi-head self-attention: [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, dtype, param_dtype,
                 rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = dense(dim, dim, ("vision_embed", "vision_heads"), use_bias=qkv_bias, **kw)
        self.k_proj = dense(dim, dim, ("vision_embed", "vision_heads"), use_bias=qkv_bias, **kw)
        self.v_proj = dense(dim, dim, ("vision_embed", "vision_heads"), use_bias=qkv_bias, **kw)
        self.out_proj = dense(dim, dim, ("vision_heads", "vision_embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q = constrain(q, ("batch", "seq", "act_heads", "head_dim"))
        out = attend(q, k, v, scale=self.head_dim ** -0.5)
        return self.out_proj(out.reshape(b, t, self.num_heads * self.head_dim))


class VisionMLP(nnx.Module):
    """fc1 -> activation -> fc2: [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, hidden: int, activation: str, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.activation = check_activation(activation)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = dense(dim, hidden, ("vision_embed", "vision_mlp"), **kw)
        self.fc2 = dense(hidden, dim, ("vision_mlp", "vision_embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = ACTIVATIONS[self.activation](self.fc1(x))
        return self.fc2(constrain(h, ("batch", "seq", "act_mlp")))


def run_layers(layers: nnx.Module, x: jax.Array, n: int) -> tuple[jax.Array, ...]:
    """HF's hidden_states of the first `n` encoder layers: (x, layer 1's output, ...), each
    [B, T, D]; one scan over stacked layers (the states nobody reads are pruned under jit)."""
    if not stacked.is_stacked(layers):
        hidden_states = [x]
        for layer in list(layers)[:n]:
            x = constrain(layer(x), ("batch", "seq", "act_embed"))
            hidden_states.append(x)
        return tuple(hidden_states)
    if n == 0:
        return (x,)

    def body(layer, h):
        h = constrain(layer(h), ("batch", "seq", "act_embed"))
        return h, h

    _, ys = stacked.scan(layers, x, body, length=n)
    return (x, *(ys[i] for i in range(n)))


def count_layers_to_run(num_layers: int, select_layer: int) -> int:
    """How many encoder layers produce hidden_states[select_layer] (index 0 = embeddings)."""
    index = select_layer + num_layers + 1 if select_layer < 0 else select_layer
    if not 0 <= index <= num_layers:
        raise ValueError(f"select_layer={select_layer} is outside the {num_layers + 1} hidden states "
                         f"(embeddings + {num_layers} layers)")
    return index


def select_tokens(hidden: jax.Array, select_feature: str) -> jax.Array:
    """'patch': drop the class token ([B, 1+N, D] -> [B, N, D]); 'cls_patch': keep it."""
    if select_feature == "patch":
        return hidden[:, 1:]
    if select_feature == "cls_patch":
        return hidden
    raise ValueError(f"select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")

