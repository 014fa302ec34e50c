"""The Qwen2.5 decoder (SPEC §1 "LLM"), layer for layer as Hugging Face's Qwen2ForCausalLM.

Parameters live in `param_dtype` (float32 master weights); matmuls run in the config's compute
`dtype` (bfloat16 or float32); RMSNorm, rotary and softmax run in float32; logits are float32.
Parameter names follow HF's (`layers.3.self_attn.q_proj.kernel` <-> `model.layers.3.self_attn.
q_proj.weight`), so the conversion table in tgg_jax/convert/qwen2_map.py reads one to one; with
`scan_layers` the layers are one stacked module (`layers.self_attn.q_proj.kernel` [L, ...],
models/stacked.py) run by one scan in training and layer by layer when decoding.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from tgg_jax.models import stacked
from tgg_jax.models.attention import INIT_STD, Attention, KVCache, Segments, linear
from tgg_jax.models.rope import rotary_tables
from tgg_jax.sharding import constrain, param_init

__all__ = ["Qwen2Config", "Qwen2", "KVCache", "REMAT_POLICIES", "qwen2p5_1p5b", "qwen2p5_3b",
           "qwen2p5_7b", "tiny"]

ACTIVATION = ("batch", "seq", "act_embed")

# Remat policies by name (config.remat_policy). Block outputs are tagged with checkpoint_name
# "attn_out" / "mlp_out" in DecoderLayer, so a policy can keep exactly those.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # no rematerialisation: every layer's activations are kept
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attn_mlp_out": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}

COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Qwen2Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None: hidden_size // num_heads
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat_policy: str = "none"
    scan_layers: bool = False  # layers stacked and run with one jax.lax.scan (models/stacked.py)
    initializer_range: float = INIT_STD  # std of every Linear and Embedding at init (HF's name)

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {self.dtype!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {sorted(REMAT_POLICIES)}, "
                             f"got {self.remat_policy!r}")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @classmethod
    def from_hf(cls, config: dict, *, source: str = "config.json", **overrides) -> Qwen2Config:
        """From an HF config.json dict; `overrides` set tgg-only fields (dtype, remat_policy, ...)."""
        if config.get("model_type") != "qwen2":
            raise ValueError(f"{source}: expected a Qwen2 config (model_type 'qwen2'), "
                             f"got model_type {config.get('model_type')!r}")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in config]
        if missing:
            raise ValueError(f"{source}: Qwen2 config is missing {missing}")
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: only hidden_act 'silu' is supported, got {config['hidden_act']!r}")
        if config.get("use_sliding_window", False):
            raise ValueError(f"{source}: sliding-window attention is not supported")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"{source}: only default rotary embeddings are supported, got {rope}")
        theta = rope.get("rope_theta", config.get("rope_theta", 1e6))
        heads = config["num_attention_heads"]
        fields = dict(
            vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"], num_layers=config["num_hidden_layers"],
            num_heads=heads, num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim"), rope_theta=float(theta),
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=config.get("tie_word_embeddings", False),
            max_position_embeddings=config.get("max_position_embeddings", 32768),
            initializer_range=config.get("initializer_range", INIT_STD))
        return cls(**{**fields, **overrides})

    @classmethod
    def from_hf_file(cls, path: str, **overrides) -> Qwen2Config:
        """From a config.json path; errors name the file."""
        with open(path) as f:
            return cls.from_hf(json.load(f), source=path, **overrides)

    def to_hf_dict(self) -> dict:
        """A dict that `transformers.Qwen2Config(**d)` accepts (and config.json can hold)."""
        return dict(
            model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=self.vocab_size,
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=self.max_position_embeddings, use_sliding_window=False,
            attention_dropout=0.0)


# Presets from the official Qwen2.5 base configs (SPEC §1 table), with scanned layers.
def qwen2p5_1p5b(**overrides) -> Qwen2Config:
    return Qwen2Config(**{**dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28,
                                 num_heads=12, num_kv_heads=2, tie_word_embeddings=True,
                                 max_position_embeddings=131072, scan_layers=True), **overrides})


def qwen2p5_3b(**overrides) -> Qwen2Config:
    return Qwen2Config(**{**dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_layers=36,
                                 num_heads=16, num_kv_heads=2, tie_word_embeddings=True,
                                 max_position_embeddings=32768, scan_layers=True), **overrides})


def qwen2p5_7b(**overrides) -> Qwen2Config:
    return Qwen2Config(**{**dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                                 num_heads=28, num_kv_heads=4, tie_word_embeddings=False,
                                 max_position_embeddings=131072, scan_layers=True), **overrides})


def tiny(**overrides) -> Qwen2Config:
    """A few-layer model for tests: same structure (GQA, biases), small sizes."""
    return Qwen2Config(**{**dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=2,
                                 num_heads=4, num_kv_heads=2, tie_word_embeddings=False,
                                 max_position_embeddings=256), **overrides})


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * scale, normalised in float32 then cast back (HF Qwen2RMSNorm)."""

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.eps, self.dtype = eps, dtype
        init = param_init(nnx.initializers.ones_init(), ("norm",))
        self.scale = nnx.Param(init(rngs.params(), (dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * self.scale[...].astype(self.dtype)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, *, dtype, param_dtype, rngs: nnx.Rngs,
                 init_std: float = INIT_STD):
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs, std=init_std)
        self.gate_proj = linear(hidden_size, intermediate_size, ("embed", "mlp"), **kw)
        self.up_proj = linear(hidden_size, intermediate_size, ("embed", "mlp"), **kw)
        self.down_proj = linear(intermediate_size, hidden_size, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = constrain(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x), ("batch", "seq", "act_mlp"))
        return self.down_proj(h)


class DecoderLayer(nnx.Module):
    """x + attn(norm(x)), then + mlp(norm(x)) (pre-norm residual blocks)."""

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        kw = dict(dtype=config.compute_dtype, param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.self_attn = Attention(config.hidden_size, config.num_heads, config.num_kv_heads,
                                   config.head_dim, init_std=config.initializer_range, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, init_std=config.initializer_range, **kw)

    def __call__(self, x, cos, sin, mask, kv=None, index=None):
        """x [B, T, D] -> ([B, T, D], updated (k, v) cache buffers or None)."""
        h, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, index)
        x = x + checkpoint_name(constrain(h, ACTIVATION), "attn_out")
        h = self.mlp(self.post_attention_layernorm(x))
        x = x + checkpoint_name(constrain(h, ACTIVATION), "mlp_out")
        return constrain(x, ACTIVATION), kv


def _remat_layer(policy):
    """A layer call under jax.checkpoint with `policy`. The layer goes in as (graphdef, state) and
    nothing is written back: nnx.remat would write its parameters back, which fails when they are
    frozen values from an outer trace (projector-only training, stage 1a)."""
    def call(layer: DecoderLayer, *args):
        graphdef, state = nnx.split(layer)
        pure = jax.checkpoint(lambda st, *a: nnx.merge(graphdef, st)(*a), policy=policy)
        return pure(state, *args)
    return call


class Qwen2(nnx.Module):
    """Qwen2ForCausalLM: token embedding, decoder layers, final RMSNorm, LM head (tied or not)."""

    def __init__(self, config: Qwen2Config, *, rngs: nnx.Rngs):
        self.config = config
        dtype, param_dtype = config.compute_dtype, jnp.dtype(config.param_dtype)
        self.embed_tokens = nnx.Embed(
            config.vocab_size, config.hidden_size, dtype=dtype, param_dtype=param_dtype,
            embedding_init=param_init(nnx.initializers.normal(config.initializer_range), ("vocab", "embed")),
            rngs=rngs)
        self.layers = stacked.build(lambda r: DecoderLayer(config, rngs=r), config.num_layers, rngs,
                                    config.scan_layers)
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype,
                            param_dtype=param_dtype, rngs=rngs)
        # Tied checkpoints (1.5B, 3B) have no lm_head: logits use the embedding table transposed.
        self.lm_head = None if config.tie_word_embeddings else nnx.Linear(
            config.hidden_size, config.vocab_size, use_bias=False, dtype=dtype, param_dtype=param_dtype,
            preferred_element_type=jnp.float32,
            kernel_init=param_init(nnx.initializers.normal(config.initializer_range), ("embed", "vocab")),
            rngs=rngs)

    def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
        """An empty KV cache for `batch` rows of up to `max_len` tokens (dtype: compute dtype)."""
        c = self.config
        return KVCache.init(c.num_layers, batch, max_len, c.num_kv_heads, c.head_dim,
                            c.compute_dtype if dtype is None else dtype)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """Token embeddings: input_ids [B, T] int -> [B, T, D] in the compute dtype."""
        # Gather first, then cast: casting the whole table each step would cost vocab x D.
        table = self.embed_tokens.embedding[...]
        return constrain(jnp.take(table, input_ids, axis=0).astype(self.config.compute_dtype), ACTIVATION)

    def hidden_states(self, input_ids: jax.Array | None = None, *, inputs_embeds: jax.Array | None = None,
                      positions: jax.Array, segment_ids: jax.Array,
                      cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """Final-normed hidden states [B, T, D] (compute dtype) and the updated cache.

        Exactly one of input_ids [B, T] / inputs_embeds [B, T, D]. positions [B, T] are rotary
        positions; segment_ids [B, T] (0 = padding, 1..n = packed sequences) decide who sees whom.
        With a cache, the T tokens are written at cache.index and attend to everything before them.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        c = self.config
        x = self.embed(input_ids) if input_ids is not None else constrain(
            inputs_embeds.astype(c.compute_dtype), ACTIVATION)
        t = x.shape[1]
        segment_ids = segment_ids.astype(jnp.int32)
        cos, sin = rotary_tables(positions, c.head_dim, c.rope_theta)
        if cache is None:
            mask, index = Segments(segment_ids), None
        else:
            index = cache.index
            if not isinstance(index, jax.core.Tracer) and int(index) + t > cache.max_len:
                raise ValueError(f"KV cache overflow: writing {t} tokens at slot {int(index)} "
                                 f"of a cache with max_len {cache.max_len}")
            cache_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, index))
            mask = Segments(segment_ids, cache_segments, index)

        policy = REMAT_POLICIES[c.remat_policy]
        if cache is None and stacked.is_stacked(self.layers):
            x, _ = stacked.scan(self.layers, x, lambda layer, h: (layer(h, cos, sin, mask)[0], None),
                                policy=policy)
        else:
            # Decoding runs layer by layer, each writing its own KV buffers in place.
            layer_fn = (lambda layer, *a: layer(*a)) if policy is None else _remat_layer(policy)
            new_k, new_v = [], []
            for i, layer in enumerate(stacked.unstacked(self.layers)):
                kv = None if cache is None else (cache.k[i], cache.v[i])
                x, kv = layer_fn(layer, x, cos, sin, mask, kv, index)
                if kv is not None:
                    new_k.append(kv[0])
                    new_v.append(kv[1])
        x = constrain(self.norm(x), ACTIVATION)
        if cache is not None:
            cache = KVCache(k=tuple(new_k), v=tuple(new_v), segment_ids=cache_segments, index=index + t)
        return x, cache

    def lm_head_table(self) -> jax.Array:
        """The LM head as a [V, D] table in the compute dtype, gathered over `fsdp` (the vocabulary
        stays split over `tensor`). The loss gathers it once per call, outside its chunk loop:
        left split over the hidden dimension, XLA:TPU runs each chunk's logits as a windowed
        einsum that accumulates float32 partial logits through HBM."""
        table = self.embed_tokens.embedding[...] if self.lm_head is None else self.lm_head.kernel[...].T
        return constrain(table.astype(self.config.compute_dtype), ("vocab", None))

    def logits(self, hidden: jax.Array, table: jax.Array | None = None) -> jax.Array:
        """LM head: hidden [B, T, D] -> logits [B, T, V] float32 (`table`: lm_head_table())."""
        table = self.lm_head_table() if table is None else table
        out = jnp.einsum("btd,vd->btv", hidden, table, preferred_element_type=jnp.float32)
        return constrain(out, ("batch", "seq", "act_vocab"))

    def __call__(self, input_ids: jax.Array | None = None, *, inputs_embeds: jax.Array | None = None,
                 positions: jax.Array, segment_ids: jax.Array,
                 cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """Logits [B, T, V] float32 and the updated cache (None without one)."""
        hidden, cache = self.hidden_states(input_ids, inputs_embeds=inputs_embeds, positions=positions,
                                           segment_ids=segment_ids, cache=cache)
        return self.logits(hidden), cache

