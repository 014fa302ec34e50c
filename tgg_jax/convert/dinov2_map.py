"""HF DINOv2 tensors <-> Dinov2Tower parameters.

Names are those of the facebook/dinov2-large checkpoint, which is also what transformers 5 writes
with save_pretrained (in memory it renames attention.attention.query -> attention.q_proj etc.; its
loader maps the checkpoint names back and forth). The class token, mask token and position table
carry leading singleton axes in HF that the tower does not store.
"""

from __future__ import annotations

from tgg_jax.convert.mapping import CONV, IDENTITY, LINEAR, Hook, Rule

# cls_token [1, 1, D] <-> [D]; mask_token [1, D] <-> [D]; position_embeddings [1, 1 + N, D] <-> [1 + N, D].
SQUEEZE_2 = Hook("squeeze_2", lambda x: x.reshape(x.shape[2:]), lambda x: x.reshape((1, 1) + x.shape))
SQUEEZE_1 = Hook("squeeze_1", lambda x: x.reshape(x.shape[1:]), lambda x: x.reshape((1,) + x.shape))

_LAYER = "encoder.layer.{i}."

_PROJECTIONS = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
                "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.out_proj",
                "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}

DINOV2_TABLE: list[Rule] = [
    Rule("embeddings.cls_token", "embeddings.cls_token", SQUEEZE_2),
    Rule("embeddings.mask_token", "embeddings.mask_token", SQUEEZE_1),
    Rule("embeddings.position_embeddings", "embeddings.position_embeddings", SQUEEZE_1),
    Rule("embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.kernel", CONV),
    Rule("embeddings.patch_embeddings.projection.bias", "embeddings.patch_embedding.bias", IDENTITY),
    Rule(_LAYER + "norm1.weight", "layers.{i}.norm1.scale"),
    Rule(_LAYER + "norm1.bias", "layers.{i}.norm1.bias"),
    *[Rule(_LAYER + f"{hf}.weight", f"layers.{{i}}.{tgg}.kernel", LINEAR) for hf, tgg in _PROJECTIONS.items()],
    *[Rule(_LAYER + f"{hf}.bias", f"layers.{{i}}.{tgg}.bias") for hf, tgg in _PROJECTIONS.items()],
    Rule(_LAYER + "layer_scale1.lambda1", "layers.{i}.layer_scale1.lambda1"),
    Rule(_LAYER + "norm2.weight", "layers.{i}.norm2.scale"),
    Rule(_LAYER + "norm2.bias", "layers.{i}.norm2.bias"),
    Rule(_LAYER + "layer_scale2.lambda1", "layers.{i}.layer_scale2.lambda1"),
    Rule("layernorm.weight", "layernorm.scale"),
    Rule("layernorm.bias", "layernorm.bias"),
]


def dinov2_table(use_mask_token: bool = True, qkv_bias: bool = True) -> list[Rule]:
    """DINOV2_TABLE without the rules for tensors a config leaves out (mask token, q/k/v biases)."""
    qkv = {f"{_LAYER}attention.attention.{p}.bias" for p in ("query", "key", "value")}
    return [r for r in DINOV2_TABLE
            if (use_mask_token or r.hf != "embeddings.mask_token") and (qkv_bias or r.hf not in qkv)]
