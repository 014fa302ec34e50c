"""The training step: next-token loss on assistant tokens, gradient accumulation, AdamW update.

State is functional (nnx.split): trainable parameters, frozen parameters (no gradient, no
optimiser state) and the optimiser state travel as pytrees so the step can be jitted with
explicit shardings and donated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

@struct.dataclass
class TrainState:
    step: jax.Array
    trainable: nnx.State
    frozen: nnx.State
    opt_state: Any


LOSS_NORMALIZATIONS = ("token", "sequence")


def check_loss_normalization(value: str, name: str = "loss_normalization") -> None:
    if value not in LOSS_NORMALIZATIONS:
        raise ValueError(f"{name} must be one of {LOSS_NORMALIZATIONS}, got {value!r}")


def sequence_weights(mask: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Per-token loss weights [B, T] under which each packed sequence's target tokens sum to 1.

    A one-word answer ("Yes") then weighs as much as a 20-token box or a 30-token description,
    instead of ~1/20 of it under the token mean.
    """
    mask = mask.astype(jnp.float32)
    t = mask.shape[1]

    def row(m, seg):
        counts = jax.ops.segment_sum(m, seg, num_segments=t + 1)
        return m / jnp.maximum(counts[seg], 1.0)

    return jax.vmap(row)(mask, segment_ids)


def chunked_cross_entropy(hidden: jax.Array, logits_fn, targets: jax.Array, mask: jax.Array,
                          chunk: int) -> tuple[jax.Array, jax.Array]:
    """Weighted sum of token cross-entropies and the sum of weights, computing logits `chunk`
    positions at a time.

    hidden [B, T, H], targets/mask [B, T] (mask: bool, or float weights). The [B, T, vocab]
    float32 logits of a 151936-row vocabulary would dominate memory; with more than one chunk,
    each chunk's logits are recomputed in the backward pass.
    """
    b, t, h = hidden.shape
    chunk = min(chunk, t) if chunk > 0 else t
    if t % chunk:
        raise ValueError(f"sequence length {t} is not a multiple of loss_chunk {chunk}")
    n = t // chunk

    def one(x, y, m):
        logits = logits_fn(x)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(losses * m)

    weights = mask.astype(jnp.float32)
    if n == 1:  # one chunk: recomputing its logits would save no memory, only add a matmul
        return one(hidden, targets, weights), jnp.sum(weights)
    one = jax.checkpoint(one)
    xs = (hidden.reshape(b, n, chunk, h).swapaxes(0, 1), targets.reshape(b, n, chunk).swapaxes(0, 1),
          weights.reshape(b, n, chunk).swapaxes(0, 1))
    total = jax.lax.map(lambda a: one(*a), xs).sum()
    return total, jnp.sum(weights)


def loss_sum_and_count(model, batch: dict, loss_chunk: int,
                       normalization: str = "token") -> tuple[jax.Array, jax.Array]:
    """(loss sum, its denominator): target tokens under "token", sequences under "sequence"."""
    check_loss_normalization(normalization)
    hidden, _ = model.hidden_states(batch["input_ids"], positions=batch["positions"],
                                    segment_ids=batch["segment_ids"], images=batch.get("images"),
                                    objects=batch.get("objects"))
    weights = batch["target_mask"]
    if normalization == "sequence":
        weights = sequence_weights(weights, batch["segment_ids"])
    table = model.llm.lm_head_table()  # gathered once per (micro)batch, not once per loss chunk
    return chunked_cross_entropy(hidden, lambda x: model.llm.logits(x, table), batch["targets"], weights,
                                 loss_chunk)


def split_microbatches(batch: dict, steps: int) -> dict:
    """[B, ...] -> [steps, B / steps, ...] for gradient accumulation."""
    def split(x):
        if x.shape[0] % steps:
            raise ValueError(f"batch {x.shape[0]} is not divisible by grad_accum_steps {steps}")
        return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])
    return jax.tree.map(split, batch)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, schedule, *,
                    grad_accum_steps: int = 1, loss_chunk: int = 0, loss_normalization: str = "token"):
    """A pure (state, batch) -> (state, metrics) step, to be jitted by the caller.

    The loss is the mean over all target tokens of the global batch ("token"), or over its
    sequences, each the mean of its own target tokens ("sequence"). Per-microbatch sums and
    denominators are added before dividing, so accumulation gives the same update as one big
    batch. metrics["tokens"] is that denominator; metrics["update_norm"] lets the trainer refuse
    to keep a state whose update was not finite.
    """
    check_loss_normalization(loss_normalization)

    def loss_fn(trainable, frozen, batch):
        model = nnx.merge(graphdef, trainable, frozen)
        return loss_sum_and_count(model, batch, loss_chunk, loss_normalization)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict):
        micro = split_microbatches(batch, grad_accum_steps)

        def accumulate(carry, mb):
            grads, loss, count = carry
            (l, c), g = grad_fn(state.trainable, state.frozen, mb)
            return (jax.tree.map(jnp.add, grads, g), loss + l, count + c), None

        zeros = jax.tree.map(jnp.zeros_like, state.trainable)
        (grads, loss, count), _ = jax.lax.scan(
            accumulate, (zeros, jnp.zeros(()), jnp.zeros(())), micro)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss / denom, "tokens": count, "grad_norm": optax.tree.norm(grads),
                   "update_norm": optax.tree.norm(updates), "lr": schedule(state.step)}
        return dataclasses.replace(state, step=state.step + 1, trainable=trainable,
                                   opt_state=opt_state), metrics

    return train_step


def make_eval_step(graphdef, loss_chunk: int = 0):
    """(state, batch) -> (loss sum, token count) for held-out loss."""

    def eval_step(state: TrainState, batch: dict):
        model = nnx.merge(graphdef, state.trainable, state.frozen)
        return loss_sum_and_count(model, batch, loss_chunk)

    return eval_step
