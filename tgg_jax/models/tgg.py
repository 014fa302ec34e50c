"""TinyGroundingGPT: two frozen vision towers -> fused patch features -> projector -> Qwen2.5.

SPEC §1. The global image and every object crop go through CLIP and DINOv2; the penultimate-layer
patch features are concatenated on channels (CLIP first), projected to the LLM width, and written
over the embeddings of the `<image>` / `<object>` placeholder runs, in order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tgg_jax.models import clip, dinov2, qwen2
from tgg_jax.models.projector import Projector
from tgg_jax.spec import CLIP_MEAN, CLIP_STD, IMAGE_TOKEN_ID, IMAGENET_MEAN, IMAGENET_STD, OBJECT_TOKEN_ID


@dataclasses.dataclass(frozen=True)
class TGGConfig:
    llm: qwen2.Qwen2Config
    clip: clip.CLIPVisionConfig
    dinov2: dinov2.Dinov2Config
    select_layer: int = -2            # hidden_states[-2]: penultimate layer (LLaVA convention)
    select_feature: str = "patch"     # drop the class token
    fusion: str = "channel"           # "channel": [P, Dc+Dd]; "token": [2P, D]
    object_pool: int = 1              # k x k average pool of object features (2 -> 144 tokens)
    image_pool: int = 1               # k x k average pool of global-image features (SPEC: 1)
    # SPEC §1 freezes the pretrained towers. Only a model trained from scratch (the tiny CPU
    # default, which has no pretrained towers to start from) sets this to False.
    freeze_towers: bool = True
    image_token_id: int = IMAGE_TOKEN_ID
    object_token_id: int = OBJECT_TOKEN_ID

    def __post_init__(self):
        if self.fusion not in ("channel", "token"):
            raise ValueError(f"fusion must be 'channel' or 'token', got {self.fusion!r}")
        if self.clip.image_size % self.clip.patch_size:
            raise ValueError("image_size must be a multiple of the patch size")
        if self.clip.patch_size != self.dinov2.patch_size:
            raise ValueError("CLIP and DINOv2 must share a patch size so their grids align")
        if self.fusion == "token" and self.clip.hidden_size != self.dinov2.hidden_size:
            raise ValueError("token fusion needs towers of the same width")
        for name in ("object_pool", "image_pool"):
            if self.grid % getattr(self, name):
                raise ValueError(f"{name} {getattr(self, name)} does not divide the {self.grid}x{self.grid} grid")

    @property
    def image_size(self) -> int:
        return self.clip.image_size

    @property
    def grid(self) -> int:
        return self.clip.image_size // self.clip.patch_size

    @property
    def image_grid(self) -> int:
        """Side of the global image's token grid: the patch grid after image_pool."""
        return self.grid // self.image_pool

    @property
    def image_tokens(self) -> int:
        """Placeholder run length of `<image>` (576 for 336 px, patch 14, channel fusion)."""
        return self.image_grid ** 2 * (2 if self.fusion == "token" else 1)

    @property
    def object_tokens(self) -> int:
        return (self.grid // self.object_pool) ** 2 * (2 if self.fusion == "token" else 1)

    @property
    def visual_width(self) -> int:
        if self.fusion == "channel":
            return self.clip.hidden_size + self.dinov2.hidden_size
        return self.clip.hidden_size

    def replace(self, **kw) -> "TGGConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TGGConfig":
        d = dict(d)
        return cls(llm=qwen2.Qwen2Config(**d.pop("llm")), clip=clip.CLIPVisionConfig(**d.pop("clip")),
                   dinov2=dinov2.Dinov2Config(**d.pop("dinov2")), **d)


def with_dtype(config: TGGConfig, dtype: str) -> TGGConfig:
    """The same model computing in `dtype` ("bfloat16" or "float32"); parameters stay fp32."""
    return config.replace(llm=dataclasses.replace(config.llm, dtype=dtype),
                          clip=dataclasses.replace(config.clip, dtype=dtype),
                          dinov2=dataclasses.replace(config.dinov2, dtype=dtype))


def with_scan_layers(config: TGGConfig, scan: bool) -> TGGConfig:
    """The same model with every part's layers stacked and scanned (True) or one by one."""
    return config.replace(llm=dataclasses.replace(config.llm, scan_layers=scan),
                          clip=dataclasses.replace(config.clip, scan_layers=scan),
                          dinov2=dataclasses.replace(config.dinov2, scan_layers=scan))


def scanned_parts(config: TGGConfig) -> dict[str, bool]:
    """{'llm': ..., 'clip': ..., 'dinov2': ...}: which parts keep their layers stacked."""
    return {part: getattr(config, part).scan_layers for part in ("llm", "clip", "dinov2")}


def tgg_1p5b() -> TGGConfig:
    return TGGConfig(llm=qwen2.qwen2p5_1p5b(), clip=clip.clip_vit_l14_336(), dinov2=dinov2.dinov2_large())


def tgg_3b() -> TGGConfig:
    return TGGConfig(llm=qwen2.qwen2p5_3b(), clip=clip.clip_vit_l14_336(), dinov2=dinov2.dinov2_large())


def tgg_7b() -> TGGConfig:
    return TGGConfig(llm=qwen2.qwen2p5_7b(), clip=clip.clip_vit_l14_336(), dinov2=dinov2.dinov2_large())


PRESETS = {"1.5b": tgg_1p5b, "3b": tgg_3b, "7b": tgg_7b}


def overwrite_placeholders(embeds: jax.Array, input_ids: jax.Array, token_id: int,
                           rows: jax.Array) -> jax.Array:
    """Write `rows` over the embeddings at the placeholder positions, in order.

    embeds [B, T, D], input_ids [B, T], rows [B, R, D]: the k-th `token_id` of a sequence gets
    rows[:, k]. Placeholder counts are checked on the host (data pipeline); here a count above R
    would clamp, so the pipeline's check is what keeps images and placeholders in step.
    """
    if rows.shape[1] == 0:
        return embeds
    is_placeholder = input_ids == token_id
    rank = jnp.clip(jnp.cumsum(is_placeholder, axis=1) - 1, 0, rows.shape[1] - 1)
    gathered = jnp.take_along_axis(rows, rank[..., None], axis=1)
    return jnp.where(is_placeholder[..., None], gathered.astype(embeds.dtype), embeds)


class TinyGroundingGPT(nnx.Module):
    def __init__(self, config: TGGConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.clip = clip.CLIPVisionTower(config.clip, rngs=rngs)
        self.dinov2 = dinov2.Dinov2Tower(config.dinov2, rngs=rngs)
        # The projector starts on the LLM's scale (initializer_range), as it writes into its embeddings.
        self.projector = Projector(config.visual_width, config.llm.hidden_size, dtype=config.llm.dtype,
                                   init_std=config.llm.initializer_range, rngs=rngs)
        self.llm = qwen2.Qwen2(config.llm, rngs=rngs)

    def visual_features(self, pixels: jax.Array) -> jax.Array:
        """Frozen tower features of preprocessed images.

        pixels: uint8 [N, S, S, 3] (padded, resized; SPEC §2) -> [N, P, visual_width].
        Both normalisations happen here, on device, so the host ships uint8.
        """
        x = pixels.astype(jnp.float32) / 255.0
        c = self.clip.features((x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD),
                               select_layer=self.config.select_layer,
                               select_feature=self.config.select_feature)
        d = self.dinov2.features((x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD),
                                 select_layer=self.config.select_layer,
                                 select_feature=self.config.select_feature)
        fused = jnp.concatenate([c, d], axis=-1 if self.config.fusion == "channel" else 1)
        # The towers are frozen in every stage (SPEC §1): no gradient flows into them.
        return jax.lax.stop_gradient(fused) if self.config.freeze_towers else fused

    def _pool(self, feats: jax.Array, k: int) -> jax.Array:
        """k x k average pool of features on the patch grid: [N, P, C] -> [N, P/k², C]."""
        if k == 1:
            return feats
        n, p, c = feats.shape
        g = self.config.grid
        blocks = p // (g * g)  # 2 for token fusion (CLIP grid then DINOv2 grid)
        x = feats.reshape(n, blocks, g // k, k, g // k, k, c).mean(axis=(3, 5))
        return x.reshape(n, -1, c)

    def project(self, feats: jax.Array, pool: int) -> jax.Array:
        """Visual features [N, P, C] -> LLM-space tokens [N, P/pool², H]: k x k pooled, projected."""
        return self.projector(self._pool(feats, pool))

    def embed_inputs(self, input_ids: jax.Array, images: jax.Array | None = None,
                     objects: jax.Array | None = None) -> jax.Array:
        """Token embeddings with the visual rows written over the placeholder runs.

        input_ids [B, T]; images uint8 [B, Ni, S, S, 3] (global images); objects uint8
        [B, No, S, S, 3] (object crops). Returns [B, T, H].
        """
        embeds = self.llm.embed(input_ids)
        b = input_ids.shape[0]
        n_img = 0 if images is None else images.shape[1]
        n_obj = 0 if objects is None else objects.shape[1]
        if n_img + n_obj == 0:
            return embeds
        s = self.config.image_size
        batches = [x.reshape(-1, s, s, 3) for x in (images, objects) if x is not None and x.shape[1]]
        # One pass through the towers for global images and object crops together.
        feats = self.visual_features(jnp.concatenate(batches, axis=0))
        global_feats, object_feats = feats[: b * n_img], feats[b * n_img:]
        if n_img:
            rows = self.project(global_feats, self.config.image_pool).reshape(b, -1, embeds.shape[-1])
            embeds = overwrite_placeholders(embeds, input_ids, self.config.image_token_id, rows)
        if n_obj:
            rows = self.project(object_feats, self.config.object_pool).reshape(b, -1, embeds.shape[-1])
            embeds = overwrite_placeholders(embeds, input_ids, self.config.object_token_id, rows)
        return embeds

    def __call__(self, input_ids: jax.Array, *, positions: jax.Array, segment_ids: jax.Array,
                 images: jax.Array | None = None, objects: jax.Array | None = None,
                 cache: qwen2.KVCache | None = None):
        """Logits [B, T, V] (float32) and the updated KV cache."""
        embeds = self.embed_inputs(input_ids, images, objects)
        return self.llm(inputs_embeds=embeds, positions=positions, segment_ids=segment_ids, cache=cache)

    def hidden_states(self, input_ids, *, positions, segment_ids, images=None, objects=None, cache=None):
        """Final-normed hidden states [B, T, H] and cache (the trainer chunks the LM head)."""
        embeds = self.embed_inputs(input_ids, images, objects)
        return self.llm.hidden_states(inputs_embeds=embeds, positions=positions,
                                      segment_ids=segment_ids, cache=cache)


def count_params(config: TGGConfig) -> dict[str, int]:
    """Parameter counts per part, from shapes only (nothing is materialised)."""
    abstract = nnx.eval_shape(lambda: TinyGroundingGPT(config, rngs=nnx.Rngs(0)))
    counts = {}
    for part in ("clip", "dinov2", "projector", "llm"):
        state = nnx.state(getattr(abstract, part), nnx.Param)
        counts[part] = sum(math.prod(x.shape) for x in jax.tree.leaves(state))
    counts["total"] = sum(counts.values())
    return counts
