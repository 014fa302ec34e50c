"""Building the model config, the sharded train state, and its initialisation (fresh or `init_from`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tgg_jax import checkpoint
from tgg_jax.errors import UserError
from tgg_jax.models.naming import tgg_name
from tgg_jax.models.tgg import (PRESETS, TGGConfig, TinyGroundingGPT, scanned_parts, with_dtype,
                                with_scan_layers)
from tgg_jax.sharding import state_shardings
from tgg_jax.train import hooks
from tgg_jax.train.checkpointing import split_like
from tgg_jax.train.optimizer import check_patterns, trainable_filter
from tgg_jax.train.step import TrainState


# Fields that say how a model computes, not what it is: a run may choose them for itself.
RUN_OPTIONS = ("dtype", "param_dtype", "remat_policy", "scan_layers", "initializer_range")


# A checkpoint's context length holds no weights: Qwen2.5's base and Instruct releases of one size
# state different ones, and either fits the preset of that size.
PRESET_IGNORED = ("max_position_embeddings",)


def architecture_diff(a: TGGConfig, b: TGGConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """'field: a vs b' for every architecture field where two model configs differ."""

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif k not in RUN_OPTIONS and k not in ignore:
                yield f"{prefix}{k}", v

    left, right = dict(flat(a.to_dict())), dict(flat(b.to_dict()))
    return [f"{k}: {left.get(k)!r} vs {right.get(k)!r}" for k in sorted(set(left) | set(right))
            if left.get(k) != right.get(k)]


def preset_config(config, tokenizer) -> TGGConfig:
    """The TGGConfig of config.model.preset: a size of PRESETS, or the function the config names
    ("package.module:function", called with the config and the tokenizer; train/hooks.py)."""
    m = config.model
    if m.preset in PRESETS:
        return PRESETS[m.preset]().replace(object_pool=m.object_pool)
    if hooks.is_hook(m.preset):
        return hooks.resolve(m.preset, "model.preset")(config, tokenizer)
    raise ValueError(f"config.model.preset must be one of {sorted(PRESETS)}, a function "
                     "'package.module:function' (the tiny configs: tgg_jax.tiny.model:preset), or "
                     f"'' with config.init_from set (the architecture of that checkpoint); got {m.preset!r}")


def model_config(config, tokenizer) -> TGGConfig:
    """The TGGConfig a run trains: that of config.init_from's checkpoint when it is set (a
    preset, if also given, must agree), else the preset's. Run options (dtype, remat,
    scan_layers) and object_pool come from the config; the placeholder ids must be the
    tokenizer's."""
    m = config.model
    if config.init_from:
        path = checkpoint.resolve_checkpoint(config.init_from)
        cfg = checkpoint.load_config(path).replace(object_pool=m.object_pool)
        if m.preset:
            diff = architecture_diff(preset_config(config, tokenizer), cfg, PRESET_IGNORED)
            if diff:
                raise UserError(f"config.model.preset={m.preset!r} disagrees with init_from {path} "
                                f"({'; '.join(diff[:3])}); set --config.model.preset='' to train "
                                "the checkpoint's architecture")
    elif m.preset:
        cfg = preset_config(config, tokenizer)
    else:
        raise UserError("config.model.preset is '' but config.init_from is not set: name a preset "
                        f"({', '.join(sorted(PRESETS))}) or a checkpoint to start from")
    if (tokenizer.image_id, tokenizer.object_id) != (cfg.image_token_id, cfg.object_token_id):
        raise UserError(f"tokenizer places <image>/<object> at {tokenizer.image_id}/"
                        f"{tokenizer.object_id}, the model expects {cfg.image_token_id}/"
                        f"{cfg.object_token_id}")
    cfg = with_scan_layers(with_dtype(cfg, m.dtype), m.scan_layers)
    return cfg.replace(llm=dataclasses.replace(cfg.llm, remat_policy=m.remat_policy))


def param_init(config) -> Callable[[TinyGroundingGPT], None] | None:
    """config.model.param_init as a function of a freshly built model, or None ('')."""
    if not config.model.param_init:
        return None
    fn = hooks.resolve(config.model.param_init, "model.param_init")
    return lambda model: fn(model, config)


def fresh_model(model_cfg: TGGConfig, seed: int,
                init: Callable[[TinyGroundingGPT], None] | None = None) -> TinyGroundingGPT:
    """The model a run starts from when nothing is loaded; `init` (see `param_init`) then
    changes its parameters in place."""
    model = TinyGroundingGPT(model_cfg, rngs=nnx.Rngs(seed))
    if init is not None:
        init(model)
    return model


def create_state(model_cfg: TGGConfig, optimizer: optax.GradientTransformation, trainable_patterns,
                 seed: int, init: Callable[[TinyGroundingGPT], None] | None = None):
    """(graphdef, abstract TrainState with logical metadata, zero-argument init function that
    builds `fresh_model`)."""
    is_trainable = trainable_filter(trainable_patterns)

    def init_state():
        model = fresh_model(model_cfg, seed, init)
        _, trainable, frozen = nnx.split(model, is_trainable, ...)
        return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen,
                          opt_state=optimizer.init(trainable))

    abstract_model = nnx.eval_shape(lambda: TinyGroundingGPT(model_cfg, rngs=nnx.Rngs(seed)))
    graphdef, trainable, frozen = nnx.split(abstract_model, is_trainable, ...)
    names = [tgg_name(p) for p, _ in nnx.to_flat_state(nnx.state(abstract_model, nnx.Param))]
    check_patterns(trainable_patterns, names, towers_frozen=model_cfg.freeze_towers)
    abstract = jax.eval_shape(init_state)
    return graphdef, abstract, init_state


def state_sharding(abstract: TrainState, optimizer: optax.GradientTransformation, mesh) -> TrainState:
    """NamedShardings for every leaf: parameters by the logical rules, optimiser moments like
    their parameters, scalars replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    trainable = state_shardings(abstract.trainable, mesh)
    frozen = state_shardings(abstract.frozen, mesh)
    opt = optax.tree_utils.tree_map_params(
        optimizer, lambda _, s: s, abstract.opt_state, trainable,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, nnx.Variable))
    return TrainState(step=replicated, trainable=trainable, frozen=frozen, opt_state=opt)


def load_init_from(state: TrainState, path: str, shardings: TrainState, model_cfg: TGGConfig) -> TrainState:
    """Replace the parameters (not the optimiser state) with those of a previous stage's checkpoint."""
    diff = architecture_diff(checkpoint.load_config(path), model_cfg)
    if diff:
        raise UserError(f"init_from {path}: its model is not this run's ({'; '.join(diff[:3])})")
    all_shardings = nnx.merge_state(shardings.trainable, shardings.frozen).to_pure_dict()
    params, _ = checkpoint.load_params(path, shardings=all_shardings, scanned=scanned_parts(model_cfg))
    trainable, frozen = split_like(params, state.trainable, state.frozen)
    return state.replace(trainable=trainable, frozen=frozen)
