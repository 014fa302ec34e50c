"""HF CLIP vision tensors <-> CLIPVisionTower parameters.

Names are those of the official openai/clip-vit-large-patch14-336 checkpoint (a full CLIPModel, so
every vision tensor starts with `vision_model.`); transformers loads a CLIPVisionModel from the same
names. A CLIPVisionModel saved by transformers 5 drops the prefix; read such a file through
`strip_vision_prefix` (`read=lambda name: tensors[strip_vision_prefix(name)]`).
"""

from __future__ import annotations

from tgg_jax.convert.mapping import CONV, IDENTITY, LINEAR, Rule

PREFIX = "vision_model."

_LAYER = PREFIX + "encoder.layers.{i}."

CLIP_TABLE: list[Rule] = [
    Rule(PREFIX + "embeddings.patch_embedding.weight", "embeddings.patch_embedding.kernel", CONV),
    Rule(PREFIX + "embeddings.class_embedding", "embeddings.class_embedding", IDENTITY),
    Rule(PREFIX + "embeddings.position_embedding.weight", "embeddings.position_embedding", IDENTITY),
    Rule(PREFIX + "pre_layrnorm.weight", "pre_layrnorm.scale"),
    Rule(PREFIX + "pre_layrnorm.bias", "pre_layrnorm.bias"),
    *[Rule(_LAYER + f"self_attn.{p}.weight", f"layers.{{i}}.self_attn.{p}.kernel", LINEAR)
      for p in ("q_proj", "k_proj", "v_proj", "out_proj")],
    *[Rule(_LAYER + f"self_attn.{p}.bias", f"layers.{{i}}.self_attn.{p}.bias")
      for p in ("q_proj", "k_proj", "v_proj", "out_proj")],
    Rule(_LAYER + "layer_norm1.weight", "layers.{i}.layer_norm1.scale"),
    Rule(_LAYER + "layer_norm1.bias", "layers.{i}.layer_norm1.bias"),
    Rule(_LAYER + "mlp.fc1.weight", "layers.{i}.mlp.fc1.kernel", LINEAR),
    Rule(_LAYER + "mlp.fc1.bias", "layers.{i}.mlp.fc1.bias"),
    Rule(_LAYER + "mlp.fc2.weight", "layers.{i}.mlp.fc2.kernel", LINEAR),
    Rule(_LAYER + "mlp.fc2.bias", "layers.{i}.mlp.fc2.bias"),
    Rule(_LAYER + "layer_norm2.weight", "layers.{i}.layer_norm2.scale"),
    Rule(_LAYER + "layer_norm2.bias", "layers.{i}.layer_norm2.bias"),
    Rule(PREFIX + "post_layernorm.weight", "post_layernorm.scale"),
    Rule(PREFIX + "post_layernorm.bias", "post_layernorm.bias"),
]


def strip_vision_prefix(name: str) -> str:
    """'vision_model.embeddings...' -> 'embeddings...' (the layout transformers 5 saves CLIPVisionModel in)."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name
