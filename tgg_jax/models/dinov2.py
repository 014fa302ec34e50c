"""The DINOv2 ViT vision tower (facebook/dinov2-large), frozen feature extractor (SPEC §1).

Matches transformers' Dinov2Model: patch conv (with bias) + class token + learned positions that are
bicubically resized to the input's patch grid, pre-norm layers with LayerScale on both branches and
exact-GELU MLPs, a final `layernorm` (kept for exact import/export; the features are taken before it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tgg_jax.models import stacked
from tgg_jax.models.interpolate import resize_bicubic
from tgg_jax.models.vit_layers import (INIT_STD, VisionAttention, VisionMLP, check_activation,
                                       count_layers_to_run, embed_patches, layer_norm, patch_conv, run_layers,
                                       select_tokens, square_size)
from tgg_jax.sharding import constrain, param_init

# transformers' Dinov2Config defaults: what a config.json means when it omits a key.
_HF_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                    hidden_act="gelu", layer_norm_eps=1e-6, image_size=224, patch_size=14, num_channels=3,
                    qkv_bias=True, layerscale_value=1.0, use_swiglu_ffn=False, use_mask_token=True)


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
    hidden_size: int = 1024
    mlp_ratio: float = 4
    num_layers: int = 24
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 518  # training size: the stored position grid is image_size // patch_size square
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    activation: str = "gelu"
    layerscale_value: float = 1.0  # LayerScale's initial value; imported weights replace it
    qkv_bias: bool = True
    use_mask_token: bool = True
    use_swiglu_ffn: bool = False  # not supported (dinov2-giant); checked by the tower
    num_register_tokens: int = 0  # not supported (dinov2 "with registers"); checked by the tower
    dtype: str = "float32"  # compute
    param_dtype: str = "float32"
    scan_layers: bool = False  # layers stacked and run with one jax.lax.scan (models/stacked.py)

    def __post_init__(self):
        check_activation(self.activation)

    @property
    def intermediate_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)  # HF: int(hidden_size * mlp_ratio)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid_size ** 2

    @classmethod
    def from_hf(cls, config: dict[str, Any], **overrides) -> Dinov2Config:
        """From a Dinov2Model config.json dict; rejects SwiGLU and register-token variants."""
        model_type = config.get("model_type")
        if model_type != "dinov2":
            raise ValueError(f"expected a DINOv2 config (model_type 'dinov2'), got model_type={model_type!r}")
        c = {**_HF_DEFAULTS, **config}
        fields = dict(hidden_size=c["hidden_size"], mlp_ratio=c["mlp_ratio"], num_layers=c["num_hidden_layers"],
                      num_heads=c["num_attention_heads"], patch_size=square_size(c["patch_size"], "patch_size"),
                      image_size=square_size(c["image_size"], "image_size"), num_channels=c["num_channels"],
                      layer_norm_eps=c["layer_norm_eps"], activation=c["hidden_act"],
                      layerscale_value=c["layerscale_value"], qkv_bias=c["qkv_bias"],
                      use_mask_token=c["use_mask_token"], use_swiglu_ffn=c["use_swiglu_ffn"],
                      num_register_tokens=c.get("num_register_tokens", 0))
        out = cls(**{**fields, **overrides})
        check_supported(out)
        return out

    def to_hf_dict(self) -> dict[str, Any]:
        """The equivalent transformers Dinov2Config fields (model_type 'dinov2')."""
        return dict(model_type="dinov2", hidden_size=self.hidden_size, mlp_ratio=self.mlp_ratio,
                    num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                    patch_size=self.patch_size, image_size=self.image_size, num_channels=self.num_channels,
                    layer_norm_eps=self.layer_norm_eps, hidden_act=self.activation,
                    layerscale_value=self.layerscale_value, qkv_bias=self.qkv_bias,
                    use_mask_token=self.use_mask_token, use_swiglu_ffn=self.use_swiglu_ffn)


def dinov2_large(**overrides) -> Dinov2Config:
    """facebook/dinov2-large (SPEC §1): trained at 518 px, a 37x37 position grid."""
    return Dinov2Config(**{**dict(hidden_size=1024, mlp_ratio=4, num_layers=24, num_heads=16, patch_size=14,
                                  image_size=518, layer_norm_eps=1e-6, activation="gelu",
                                  layerscale_value=1.0, scan_layers=True), **overrides})


def tiny(**overrides) -> Dinov2Config:
    """A 3-layer, 64-wide tower trained at 98 px (7x7 position grid) for tests."""
    return Dinov2Config(**{**dict(hidden_size=64, mlp_ratio=2, num_layers=3, num_heads=4, patch_size=14,
                                  image_size=98), **overrides})


def check_supported(config: Dinov2Config) -> None:
    """facebook/dinov2-large has a plain GELU MLP and no register tokens; other variants are refused."""
    if config.use_swiglu_ffn:
        raise ValueError("DINOv2 with use_swiglu_ffn=True (dinov2-giant) is not supported")
    if config.num_register_tokens:
        raise ValueError(f"DINOv2 with register tokens (num_register_tokens={config.num_register_tokens}) "
                         "is not supported")


def interpolate_positions(positions: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """[1 + s*s, D] stored positions -> [1 + h*w, D] for an h x w patch grid.

    As HF's Dinov2Embeddings.interpolate_pos_encoding: the class position is kept, the s x s patch
    grid is resized with torch's bicubic (`size=(h, w)`, align_corners=False) in float32, and the
    stored grid is used as-is when it already has the input's size.
    """
    side = math.isqrt(positions.shape[0] - 1)
    if side * side != positions.shape[0] - 1:
        raise ValueError(f"{positions.shape[0] - 1} patch positions do not form a square grid")
    if grid == (side, side):
        return positions
    cls_pos, patch_pos = positions[:1], positions[1:].reshape(side, side, -1)
    resized = resize_bicubic(patch_pos.astype(jnp.float32), grid).astype(positions.dtype)
    return jnp.concatenate([cls_pos, resized.reshape(grid[0] * grid[1], -1)], axis=0)


class Dinov2Embeddings(nnx.Module):
    """[B, H, W, C] -> [B, 1 + h*w, D]: class token, patch embeddings, resized positions."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        d = config.hidden_size
        normal = nnx.initializers.normal(INIT_STD)
        self.cls_token = nnx.Param(param_init(normal, ("vision_embed",))(rngs.params(), (d,), param_dtype))
        # Only used by DINOv2's masked-image pretraining; kept so import/export is exact.
        if config.use_mask_token:
            self.mask_token = nnx.Param(param_init(nnx.initializers.zeros_init(), ("vision_embed",))(
                rngs.params(), (d,), param_dtype))
        self.patch_embedding = patch_conv(config.patch_size, config.num_channels, d, use_bias=True,
                                          dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.position_embeddings = nnx.Param(param_init(normal, ("vision_pos", "vision_embed"))(
            rngs.params(), (config.num_positions + 1, d), param_dtype))

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        dtype = jnp.dtype(self.config.dtype)
        patches, grid = embed_patches(self.patch_embedding, pixel_values)
        b, _, d = patches.shape
        cls = jnp.broadcast_to(self.cls_token[...].astype(dtype), (b, 1, d))
        tokens = jnp.concatenate([cls, patches.astype(dtype)], axis=1)
        positions = interpolate_positions(self.position_embeddings[...], grid)
        return tokens + positions.astype(dtype)[None]


class Dinov2LayerScale(nnx.Module):
    """Per-channel residual-branch scale (DINOv2's LayerScale): x * lambda1."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs):
        self.lambda1 = nnx.Param(param_init(nnx.initializers.constant(config.layerscale_value), ("norm",))(
            rngs.params(), (config.hidden_size,), jnp.dtype(config.param_dtype)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.lambda1[...].astype(x.dtype)


class Dinov2Layer(nnx.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))): [B, T, D] -> [B, T, D]."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs):
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        d = config.hidden_size
        self.norm1 = layer_norm(d, config.layer_norm_eps, **kw)
        self.attention = VisionAttention(d, config.num_heads, qkv_bias=config.qkv_bias, **kw)
        self.layer_scale1 = Dinov2LayerScale(config, rngs=rngs)
        self.norm2 = layer_norm(d, config.layer_norm_eps, **kw)
        self.mlp = VisionMLP(d, config.intermediate_size, config.activation, **kw)
        self.layer_scale2 = Dinov2LayerScale(config, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class Dinov2Tower(nnx.Module):
    """Dinov2Model as a frozen feature extractor; pixel_values are NHWC, already normalised."""

    def __init__(self, config: Dinov2Config, *, rngs: nnx.Rngs):
        check_supported(config)
        self.config = config
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.embeddings = Dinov2Embeddings(config, rngs=rngs)
        self.layers = stacked.build(lambda r: Dinov2Layer(config, rngs=r), config.num_layers, rngs,
                                    config.scan_layers)
        # Unused by the features (taken before it) but kept so export reproduces the checkpoint.
        self.layernorm = layer_norm(config.hidden_size, config.layer_norm_eps, **kw)

    def __call__(self, pixel_values: jax.Array, *, num_layers_to_run: int | None = None
                 ) -> tuple[jax.Array, ...]:
        """HF's `hidden_states` with output_hidden_states=True: [embeddings, layer 1, ...].

        pixel_values: [B, H, W, C], any size (positions are resized to the H//p x W//p grid). Runs
        the first `num_layers_to_run` layers (all by default); returns 1 + that many [B, 1 + h*w, D].
        """
        n = self.config.num_layers if num_layers_to_run is None else num_layers_to_run
        if not 0 <= n <= self.config.num_layers:
            raise ValueError(f"num_layers_to_run={n} outside [0, {self.config.num_layers}]")
        x = constrain(self.embeddings(pixel_values), ("batch", "seq", "act_embed"))
        return run_layers(self.layers, x, n)

    def features(self, pixel_values: jax.Array, select_layer: int = -2, select_feature: str = "patch"
                 ) -> jax.Array:
        """hidden_states[select_layer], class token dropped ('patch') or kept ('cls_patch').

        [B, H, W, C] -> [B, h*w, D] ('patch') or [B, 1 + h*w, D]; runs only the layers it needs.
        """
        n = count_layers_to_run(self.config.num_layers, select_layer)
        return select_tokens(self(pixel_values, num_layers_to_run=n)[-1], select_feature)
