"""The tiny model: the `tgg_tiny` architecture and the mimetic initialisation of its attention.

Same structure as the real presets (two towers, projector, Qwen2 decoder), sized for a CPU: a
from-scratch LLM of a few 128-wide layers and towers of 64 channels, with a tied head.
"""

from __future__ import annotations

import jax.numpy as jnp

from tgg_jax.models import clip, dinov2, qwen2, stacked
from tgg_jax.models.tgg import TGGConfig


def tgg_tiny(*, vocab_size: int, image_token_id: int, object_token_id: int, max_length: int,
             hidden_size: int = 128, intermediate_size: int = 384, num_layers: int = 4,
             num_heads: int = 4, num_kv_heads: int = 2, vision_width: int = 64,
             vision_layers: int = 2, vision_heads: int = 4, patch_size: int = 14,
             image_size: int = 336, init_std: float = 0.02, object_pool: int = 1,
             image_pool: int = 1, freeze_towers: bool = True) -> TGGConfig:
    """The tiny TinyGroundingGPT for a tokenizer of `vocab_size` entries (rounded up to a
    multiple of 64 rows, as Qwen2.5 pads its own table)."""
    vocab = -(-vocab_size // 64) * 64
    return TGGConfig(
        llm=qwen2.Qwen2Config(vocab_size=vocab, hidden_size=hidden_size,
                              intermediate_size=intermediate_size, num_layers=num_layers,
                              num_heads=num_heads, num_kv_heads=num_kv_heads,
                              tie_word_embeddings=True, max_position_embeddings=max_length,
                              initializer_range=init_std),
        clip=clip.CLIPVisionConfig(hidden_size=vision_width, intermediate_size=2 * vision_width,
                                   num_layers=vision_layers, num_heads=vision_heads,
                                   patch_size=patch_size, image_size=image_size),
        dinov2=dinov2.Dinov2Config(hidden_size=vision_width, mlp_ratio=2, num_layers=vision_layers,
                                   num_heads=vision_heads, patch_size=patch_size,
                                   image_size=image_size),
        object_pool=object_pool, image_pool=image_pool, freeze_towers=freeze_towers,
        image_token_id=image_token_id, object_token_id=object_token_id)


# config.model keys that size the tiny model (configs/tiny.py adds them).
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
             "vision_width", "vision_layers", "vision_heads", "patch_size", "image_size",
             "init_std", "object_pool", "image_pool", "freeze_towers")


def preset(config, tokenizer) -> TGGConfig:
    """config.model.preset hook of the tiny configs: `tgg_tiny` sized by config.model."""
    return tgg_tiny(vocab_size=tokenizer.vocab_size, image_token_id=tokenizer.image_id,
                    object_token_id=tokenizer.object_id, max_length=config.data.max_length,
                    **{k: config.model[k] for k in SIZE_KEYS})


def mimetic_init(llm: qwen2.Qwen2, gain: float) -> None:
    """Start every query head as its key head's kernel times `gain` (biases stay zero), so that
    W_q W_k^T is positive semi-definite and, before any training, a token attends most to the
    tokens most like itself: Trockman & Kolter's mimetic initialisation (2023) in its simplest
    form. A from-scratch model then finds "the earlier token that matches this one" at step 0
    instead of having to grow that attention out of uniform (docs/tiny_model.md)."""
    for layer in stacked.stacked_groups(llm.layers):  # kernels [(layers,) hidden, heads * dim]
        attn = layer.self_attn
        lead = attn.k_proj.kernel.shape[:-1]
        k = attn.k_proj.kernel[...].reshape(*lead, attn.num_kv_heads, 1, attn.head_dim)
        q = jnp.broadcast_to(k, (*lead, attn.num_kv_heads, attn.num_heads // attn.num_kv_heads, attn.head_dim))
        attn.q_proj.kernel[...] = (gain * q).reshape(*lead, attn.num_heads * attn.head_dim).astype(
            attn.q_proj.kernel.dtype)


def param_init(model, config) -> None:
    """config.model.param_init hook of the tiny configs: mimetic attention when
    config.model.mimetic_gain > 0."""
    if config.model.mimetic_gain:
        mimetic_init(model.llm, config.model.mimetic_gain)
