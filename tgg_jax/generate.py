"""Batched generation with a fixed-size KV cache: one prefill, then a jitted decode loop.

Prompts are left-padded (segment 0 on the pads) so every row's next token is written at the same
cache slot; each row stops on its own at `<|im_end|>` / EOS and is padded after that. Greedy when
temperature is 0, else temperature + top-p sampling. Runs sharded on the training mesh when the
model state and inputs are placed on it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tgg_jax.models import stacked


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0   # 0: greedy
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0


def left_pad(prompts: Sequence[np.ndarray], pad_id: int, length: int | None = None) -> dict:
    """Prompts -> input_ids, segment_ids (1 real / 0 pad) and positions [B, T], left-padded."""
    t = max(len(p) for p in prompts) if length is None else length
    if any(len(p) > t for p in prompts):
        raise ValueError(f"a prompt is longer than the padded length {t}")
    ids = np.full((len(prompts), t), pad_id, np.int32)
    seg = np.zeros((len(prompts), t), np.int32)
    pos = np.zeros((len(prompts), t), np.int32)
    for i, p in enumerate(prompts):
        n = len(p)
        ids[i, t - n:] = p
        seg[i, t - n:] = 1
        pos[i, t - n:] = np.arange(n)
    return {"input_ids": ids, "segment_ids": seg, "positions": pos}


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Logits outside the smallest set of tokens whose probability reaches top_p -> -inf."""
    if top_p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the mass before it is below top_p (so the first token is always kept).
    keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def next_token(logits: jax.Array, rng: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """[B, V] float32 logits -> [B] int32 tokens."""
    if sampling.temperature <= 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = top_p_filter(logits / sampling.temperature, sampling.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _generate(graphdef, state, sampling: SamplingConfig, inputs: dict, rng: jax.Array):
    model = nnx.merge(graphdef, state)
    b, t = inputs["input_ids"].shape
    llm = model.llm if hasattr(model, "llm") else model
    if stacked.is_stacked(llm.layers):
        # Each layer's slice of the stacked weights, taken once here rather than per new token.
        llm.layers = nnx.List(stacked.unstacked(llm.layers))
    cache = llm.init_cache(b, t + sampling.max_new_tokens)
    if hasattr(model, "llm"):  # TinyGroundingGPT: images and objects go into the prefill
        logits, cache = model(inputs["input_ids"], positions=inputs["positions"],
                              segment_ids=inputs["segment_ids"], images=inputs.get("images"),
                              objects=inputs.get("objects"), cache=cache)
    else:  # a bare Qwen2 decoder
        logits, cache = llm(inputs["input_ids"], positions=inputs["positions"],
                            segment_ids=inputs["segment_ids"], cache=cache)
    stop = jnp.asarray(sampling.stop_ids or (-1,), jnp.int32)
    rng, sub = jax.random.split(rng)
    token = next_token(logits[:, -1], sub, sampling)
    position = inputs["positions"][:, -1] + 1
    out = jnp.full((b, sampling.max_new_tokens), sampling.pad_id, jnp.int32)

    def cond(carry):
        i, _, _, _, done, _, _ = carry
        return (i < sampling.max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, token, position, cache, done, out, rng = carry
        out = out.at[:, i].set(jnp.where(done, sampling.pad_id, token))
        done = done | jnp.isin(token, stop)
        logits, cache = llm(token[:, None], positions=position[:, None],
                            segment_ids=jnp.ones((b, 1), jnp.int32), cache=cache)
        rng, sub = jax.random.split(rng)
        return i + 1, next_token(logits[:, -1], sub, sampling), position + 1, cache, done, out, rng

    carry = (jnp.zeros((), jnp.int32), token, position, cache, jnp.zeros((b,), bool), out, rng)
    _, _, _, _, _, out, _ = jax.lax.while_loop(cond, body, carry)
    return out


def generate(model: nnx.Module, inputs: dict, sampling: SamplingConfig, rng: jax.Array | None = None) -> np.ndarray:
    """Generated tokens [B, max_new_tokens] (stop token included, pad after it).

    model: TinyGroundingGPT (inputs may carry `images` / `objects`) or a bare Qwen2.
    inputs: left-padded input_ids, segment_ids, positions (see `left_pad`).
    """
    graphdef, state = nnx.split(model)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return np.asarray(_generate(graphdef, state, sampling, inputs, rng))


def strip(tokens: np.ndarray, stop_ids: Sequence[int]) -> list[list[int]]:
    """Per row, the tokens before the first stop id."""
    rows = []
    for row in np.asarray(tokens):
        out = []
        for tok in row:
            if int(tok) in stop_ids:
                break
            out.append(int(tok))
        rows.append(out)
    return rows
