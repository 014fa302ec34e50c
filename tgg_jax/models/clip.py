"""The CLIP ViT vision tower (openai/clip-vit-large-patch14-336), frozen feature extractor (SPEC §1).

Matches transformers' CLIPVisionModel: patch conv (no bias) + class embedding + learned absolute
positions, `pre_layrnorm`, pre-norm encoder layers with quick_gelu MLPs, `post_layernorm` (kept
for exact import/export; the features are taken before it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tgg_jax.models import stacked
from tgg_jax.models.vit_layers import (INIT_STD, VisionAttention, VisionMLP, check_activation, check_nhwc,
                                       count_layers_to_run, embed_patches, layer_norm, patch_conv, run_layers,
                                       select_tokens, square_size)
from tgg_jax.sharding import constrain, param_init

# transformers' CLIPVisionConfig defaults: what a config.json means when it omits a key.
_HF_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                    layer_norm_eps=1e-5)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 336
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    activation: str = "quick_gelu"
    dtype: str = "float32"  # compute
    param_dtype: str = "float32"
    scan_layers: bool = False  # layers stacked and run with one jax.lax.scan (models/stacked.py)

    def __post_init__(self):
        check_activation(self.activation)
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIP image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @classmethod
    def from_hf(cls, config: dict[str, Any], **overrides) -> CLIPVisionConfig:
        """From a CLIPVisionModel config.json dict, or a full CLIPModel one (its "vision_config")."""
        model_type = config.get("model_type")
        if model_type == "clip":
            config = config.get("vision_config") or {}
            model_type = config.get("model_type", "clip_vision_model")
        if model_type != "clip_vision_model":
            raise ValueError(f"expected a CLIP config (model_type 'clip_vision_model' or 'clip'), "
                             f"got model_type={model_type!r}")
        c = {**_HF_DEFAULTS, **config}
        fields = dict(hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                      num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                      patch_size=square_size(c["patch_size"], "patch_size"),
                      image_size=square_size(c["image_size"], "image_size"), num_channels=c["num_channels"],
                      layer_norm_eps=c["layer_norm_eps"], activation=c["hidden_act"])
        return cls(**{**fields, **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        """The equivalent transformers CLIPVisionConfig fields (model_type 'clip_vision_model')."""
        return dict(model_type="clip_vision_model", hidden_size=self.hidden_size,
                    intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
                    num_attention_heads=self.num_heads, num_channels=self.num_channels,
                    image_size=self.image_size, patch_size=self.patch_size, hidden_act=self.activation,
                    layer_norm_eps=self.layer_norm_eps)


def clip_vit_l14_336(**overrides) -> CLIPVisionConfig:
    """openai/clip-vit-large-patch14-336's vision model (SPEC §1)."""
    return CLIPVisionConfig(**{**dict(hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16,
                                      patch_size=14, image_size=336, layer_norm_eps=1e-5,
                                      activation="quick_gelu", scan_layers=True), **overrides})


def tiny(**overrides) -> CLIPVisionConfig:
    """A 3-layer, 64-wide tower on 56 px images (4x4 patches) for tests."""
    return CLIPVisionConfig(**{**dict(hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4,
                                      patch_size=14, image_size=56), **overrides})


class CLIPVisionEmbeddings(nnx.Module):
    """[B, H, W, C] -> [B, 1 + num_patches, D]: class token, patch embeddings, absolute positions."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        d = config.hidden_size
        self.patch_embedding = patch_conv(config.patch_size, config.num_channels, d, use_bias=False,
                                          dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        normal = nnx.initializers.normal(INIT_STD)
        self.class_embedding = nnx.Param(
            param_init(normal, ("vision_embed",))(rngs.params(), (d,), param_dtype))
        self.position_embedding = nnx.Param(param_init(normal, ("vision_pos", "vision_embed"))(
            rngs.params(), (config.num_patches + 1, d), param_dtype))

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        check_nhwc(pixel_values, self.config.num_channels)
        size = self.config.image_size
        if pixel_values.shape[1:3] != (size, size):
            raise ValueError(f"CLIP tower expects {size}x{size} images, got {pixel_values.shape[1:3]}")
        dtype = jnp.dtype(self.config.dtype)
        patches, _ = embed_patches(self.patch_embedding, pixel_values)
        b, _, d = patches.shape
        cls = jnp.broadcast_to(self.class_embedding[...].astype(dtype), (b, 1, d))
        tokens = jnp.concatenate([cls, patches.astype(dtype)], axis=1)
        return tokens + self.position_embedding[...].astype(dtype)[None]


class CLIPEncoderLayer(nnx.Module):
    """x + attn(ln1(x)), then x + mlp(ln2(x)): [B, T, D] -> [B, T, D]."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        d = config.hidden_size
        self.layer_norm1 = layer_norm(d, config.layer_norm_eps, **kw)
        self.self_attn = VisionAttention(d, config.num_heads, **kw)
        self.layer_norm2 = layer_norm(d, config.layer_norm_eps, **kw)
        self.mlp = VisionMLP(d, config.intermediate_size, config.activation, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPVisionTower(nnx.Module):
    """CLIPVisionModel as a frozen feature extractor; pixel_values are NHWC, already normalised."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs):
        self.config = config
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.embeddings = CLIPVisionEmbeddings(config, rngs=rngs)
        self.pre_layrnorm = layer_norm(config.hidden_size, config.layer_norm_eps, **kw)  # HF's spelling
        self.layers = stacked.build(lambda r: CLIPEncoderLayer(config, rngs=r), config.num_layers, rngs,
                                    config.scan_layers)
        # Unused by the features (taken before it) but kept so export reproduces the checkpoint.
        self.post_layernorm = layer_norm(config.hidden_size, config.layer_norm_eps, **kw)

    def __call__(self, pixel_values: jax.Array, *, num_layers_to_run: int | None = None
                 ) -> tuple[jax.Array, ...]:
        """HF's `hidden_states` with output_hidden_states=True: [pre_layrnorm output, layer 1, ...].

        pixel_values: [B, image_size, image_size, C]. Runs the first `num_layers_to_run` layers
        (all by default); returns 1 + that many arrays of [B, 1 + num_patches, D].
        """
        n = self.config.num_layers if num_layers_to_run is None else num_layers_to_run
        if not 0 <= n <= self.config.num_layers:
            raise ValueError(f"num_layers_to_run={n} outside [0, {self.config.num_layers}]")
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        x = constrain(x, ("batch", "seq", "act_embed"))
        return run_layers(self.layers, x, n)

    def features(self, pixel_values: jax.Array, select_layer: int = -2, select_feature: str = "patch"
                 ) -> jax.Array:
        """hidden_states[select_layer], class token dropped ('patch') or kept ('cls_patch').

        [B, H, W, C] -> [B, num_patches, D] ('patch') or [B, 1 + num_patches, D]; runs only the
        layers it needs (the last layer is skipped for select_layer=-2).
        """
        n = count_layers_to_run(self.config.num_layers, select_layer)
        return select_tokens(self(pixel_values, num_layers_to_run=n)[-1], select_feature)
