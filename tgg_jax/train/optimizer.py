"""Which parameters train (declared in config as patterns) and the optimiser that trains them.

Frozen parameters are split off before differentiation, so they get neither gradients nor
optimiser state (SPEC §1: the towers are frozen in every stage; §3: stage 1a trains only the
projector).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import optax
from flax import nnx

from tgg_jax.models.naming import tgg_name


def trainable_filter(patterns: Sequence[str]):
    """An nnx filter: a Param whose dotted name fully matches one of the regex `patterns`.

    e.g. ("projector\\..*",) for stage 1a, ("projector\\..*", "llm\\..*") for the others.
    """
    compiled = [re.compile(p) for p in patterns]
    if not compiled:
        raise ValueError("config.trainable is empty: nothing would train")

    def is_trainable(path, value) -> bool:
        return isinstance(value, nnx.Param) and any(c.fullmatch(tgg_name(path)) for c in compiled)

    return is_trainable


def check_patterns(patterns: Sequence[str], names: Sequence[str], towers_frozen: bool = True) -> None:
    """Every pattern must match some parameter; a typo must not silently freeze the model; the
    towers train only in a model built with freeze_towers=False."""
    for p in patterns:
        if not any(re.fullmatch(p, n) for n in names):
            raise ValueError(f"config.trainable pattern {p!r} matches no parameter "
                             f"(names look like {names[:3]} ...)")
    for n in names:
        if towers_frozen and re.match(r"(clip|dinov2)\.", n) and any(re.fullmatch(p, n) for p in patterns):
            raise ValueError(f"config.trainable selects {n}: the vision towers are frozen in every stage")


def learning_rate_schedule(config) -> optax.Schedule:
    """Linear warm-up over warmup_ratio of the steps, then cosine decay to 0 (SPEC §3).

    With decay_ratio < 1 the rate holds at its peak after warm-up and the cosine takes only the
    last decay_ratio of the steps (warm-up, stable, decay): a short run then spends most of its
    steps at the peak rate instead of decaying from the start."""
    total = max(int(config.total_steps), 1)
    warmup = int(round(config.warmup_ratio * total))
    if not 0.0 < config.decay_ratio <= 1.0:
        raise ValueError(f"config.decay_ratio must be in (0, 1], got {config.decay_ratio}")
    if config.decay_ratio == 1.0:
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=config.lr, warmup_steps=warmup,
            decay_steps=max(total, warmup + 1), end_value=0.0)
    decay = max(int(round(config.decay_ratio * total)), 1)
    stable_end = max(total - decay, warmup)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, config.lr, max(warmup, 1)),
         optax.constant_schedule(config.lr),
         optax.cosine_decay_schedule(config.lr, max(total - stable_end, 1), alpha=0.0)],
        boundaries=[warmup, stable_end])


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; fp32 state over fp32 master weights."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2,
                    eps=config.adam_eps, weight_decay=config.weight_decay),
    )
