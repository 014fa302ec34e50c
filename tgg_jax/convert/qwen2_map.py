"""Hugging Face Qwen2ForCausalLM <-> tgg_jax.models.qwen2.Qwen2 parameter names."""

from __future__ import annotations

from tgg_jax.convert.mapping import LINEAR, Rule

QWEN2_TABLE: list[Rule] = [
    Rule("model.embed_tokens.weight", "embed_tokens.embedding"),
    Rule("model.layers.{i}.input_layernorm.weight", "layers.{i}.input_layernorm.scale"),
    Rule("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.self_attn.q_proj.kernel", LINEAR),
    Rule("model.layers.{i}.self_attn.q_proj.bias", "layers.{i}.self_attn.q_proj.bias"),
    Rule("model.layers.{i}.self_attn.k_proj.weight", "layers.{i}.self_attn.k_proj.kernel", LINEAR),
    Rule("model.layers.{i}.self_attn.k_proj.bias", "layers.{i}.self_attn.k_proj.bias"),
    Rule("model.layers.{i}.self_attn.v_proj.weight", "layers.{i}.self_attn.v_proj.kernel", LINEAR),
    Rule("model.layers.{i}.self_attn.v_proj.bias", "layers.{i}.self_attn.v_proj.bias"),
    Rule("model.layers.{i}.self_attn.o_proj.weight", "layers.{i}.self_attn.o_proj.kernel", LINEAR),
    Rule("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.post_attention_layernorm.scale"),
    Rule("model.layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.gate_proj.kernel", LINEAR),
    Rule("model.layers.{i}.mlp.up_proj.weight", "layers.{i}.mlp.up_proj.kernel", LINEAR),
    Rule("model.layers.{i}.mlp.down_proj.weight", "layers.{i}.mlp.down_proj.kernel", LINEAR),
    Rule("model.norm.weight", "norm.scale"),
    Rule("lm_head.weight", "lm_head.kernel", LINEAR),
]


def qwen2_table(config) -> list[Rule]:
    """QWEN2_TABLE for `config` (a Qwen2Config): without lm_head when embeddings are tied."""
    if config.tie_word_embeddings:
        return [r for r in QWEN2_TABLE if r.hf != "lm_head.weight"]
    return list(QWEN2_TABLE)
