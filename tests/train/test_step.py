"""The train step under every remat policy and trainable set (stage 1a trains the projector
alone, with the LLM frozen inside rematerialised layers)."""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from tests.models.test_tgg import tiny_config
from tgg_jax.models import stacked
from tgg_jax.models.tgg import scanned_parts, with_scan_layers
from tgg_jax.train.state import create_state
from tgg_jax.train.step import chunked_cross_entropy, make_train_step


def batch(cfg, b=2, t=24):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (b, t)).astype(np.int32)
    ids[:, 1:1 + cfg.image_tokens] = cfg.image_token_id
    return {"input_ids": ids, "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)),
            "segment_ids": np.ones((b, t), np.int32), "targets": np.roll(ids, -1, axis=1),
            "target_mask": np.arange(t)[None].repeat(b, 0) > cfg.image_tokens,
            "images": rng.integers(0, 256, (b, 1, cfg.image_size, cfg.image_size, 3), np.uint8),
            "objects": np.zeros((b, 0, cfg.image_size, cfg.image_size, 3), np.uint8)}


def one_step(cfg, trainable):
    optimizer = optax.sgd(1.0)  # the update is the gradient itself (Adam would magnify rounding)
    graphdef, _, init = create_state(cfg, optimizer, trainable, seed=0)
    state = jax.jit(init)()
    step = jax.jit(make_train_step(graphdef, optimizer, optax.constant_schedule(1.0)))
    state, metrics = step(state, batch(cfg))
    return state, metrics


@pytest.mark.parametrize("trainable", [common.PROJECTOR_ONLY, common.LLM_AND_PROJECTOR])
def test_remat_full_equals_no_remat(trainable):
    cfg = tiny_config()
    ref_state, ref = one_step(cfg, trainable)
    full = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, remat_policy="full"))
    state, metrics = one_step(full, trainable)
    np.testing.assert_allclose(metrics["loss"], ref["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], ref["grad_norm"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 state.trainable, ref_state.trainable)
    trains_llm = any("llm" in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.trainable))
    assert trains_llm == (trainable == common.LLM_AND_PROJECTOR)


@pytest.mark.parametrize("trainable", [common.PROJECTOR_ONLY, common.LLM_AND_PROJECTOR])
def test_scanned_step_equals_the_per_layer_step(trainable):
    """Stacked, scanned, rematerialised layers (frozen ones too in stage 1a) take the step the
    per-layer model takes from the same parameters."""
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, remat_policy="full"))
    ref_state, ref = one_step(cfg, trainable)
    optimizer = optax.sgd(1.0)
    scan_cfg = with_scan_layers(cfg, True)
    graphdef, _, init = create_state(scan_cfg, optimizer, trainable, seed=0)
    state = jax.jit(init)()
    per_layer = jax.jit(create_state(cfg, optimizer, trainable, seed=0)[2])()  # one_step's start
    for ours, theirs in ((state.trainable, per_layer.trainable), (state.frozen, per_layer.frozen)):
        nnx.replace_by_pure_dict(ours, stacked.relayout(nnx.to_pure_dict(theirs), scanned_parts(scan_cfg)))
    step = jax.jit(make_train_step(graphdef, optimizer, optax.constant_schedule(1.0)))
    state, metrics = step(state, batch(scan_cfg))
    np.testing.assert_allclose(metrics["loss"], ref["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], ref["grad_norm"], rtol=1e-5)
    want = stacked.relayout(nnx.to_pure_dict(ref_state.trainable), scanned_parts(scan_cfg))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 nnx.to_pure_dict(state.trainable), want)


@pytest.mark.parametrize("chunk", [0, 4, 8])
def test_chunked_cross_entropy_matches_a_hand_written_log_softmax(chunk):
    """One chunk (no recompute) and several (recomputed) give the reference loss and gradients."""
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(2, 16, 8)).astype(np.float32)
    table = rng.normal(size=(11, 8)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 16))
    weights = rng.uniform(size=(2, 16)).astype(np.float32)

    def ours(h, w):
        return chunked_cross_entropy(h, lambda x: x @ w.T, targets, weights, chunk)[0]

    def reference(h, w):
        logits = h @ w.T
        logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
        return -(jax.numpy.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights).sum()

    np.testing.assert_allclose(ours(hidden, table), reference(hidden, table), rtol=1e-5)
    g_ours = jax.grad(ours, argnums=(0, 1))(hidden, table)
    g_ref = jax.grad(reference, argnums=(0, 1))(hidden, table)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert float(chunked_cross_entropy(hidden, lambda x: x @ table.T, targets, weights, chunk)[1]) == \
        pytest.approx(weights.sum(), rel=1e-6)
