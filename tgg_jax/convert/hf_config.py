"""The JSON files of an export: each Hugging Face part's config.json and generation_config.json,
and DIR/tgg_config.json, what joins the parts into TinyGroundingGPT (read by tgg_jax.torch)."""

from __future__ import annotations

from tgg_jax import spec
from tgg_jax.data.tokenizer import TggTokenizer
from tgg_jax.models.tgg import TGGConfig

EXPORT_FORMAT = "tgg-hf-export"
EXPORT_CONFIG_FILE = "tgg_config.json"
PROJECTOR_FILE = "projector.safetensors"


def llm_config(config: TGGConfig, tokenizer: TggTokenizer, dtype: str) -> dict:
    return {**config.llm.to_hf_dict(), "dtype": dtype, "bos_token_id": tokenizer.endoftext_id,
            "eos_token_id": tokenizer.im_end_id, "pad_token_id": tokenizer.endoftext_id}


def generation_config(tokenizer: TggTokenizer) -> dict:
    """Greedy, stopping at <|im_end|> or <|endoftext|> (what tgg_jax.inference does)."""
    return {"bos_token_id": tokenizer.endoftext_id, "pad_token_id": tokenizer.endoftext_id,
            "eos_token_id": [tokenizer.im_end_id, tokenizer.endoftext_id], "do_sample": False}


def export_config(config: TGGConfig, dtype: str) -> dict:
    """DIR/tgg_config.json: how the HF parts make TinyGroundingGPT (read by tgg_jax.torch)."""
    return {
        "format": EXPORT_FORMAT, "version": 1, "dtype": dtype,
        "parts": {"llm": "llm", "clip": "clip", "dinov2": "dinov2", "projector": PROJECTOR_FILE},
        "select_layer": config.select_layer, "select_feature": config.select_feature,
        "fusion": config.fusion, "object_pool": config.object_pool, "image_pool": config.image_pool,
        "image_token_id": config.image_token_id, "object_token_id": config.object_token_id,
        "image_tokens": config.image_tokens, "object_tokens": config.object_tokens,
        "image_size": config.image_size, "pad_fill": list(spec.PAD_FILL),
        "object_margin": spec.OBJECT_MARGIN,  # at inference (training may jitter it)
        "projector": {"type": "mlp2x_gelu", "in_features": config.visual_width,
                      "out_features": config.llm.hidden_size},
        "normalization": {"clip": {"mean": list(spec.CLIP_MEAN), "std": list(spec.CLIP_STD)},
                          "dinov2": {"mean": list(spec.IMAGENET_MEAN), "std": list(spec.IMAGENET_STD)}},
        "tgg_jax_config": config.to_dict(),  # the full model config, for the way back
    }
