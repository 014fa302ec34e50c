"""loss_normalization: "token" averages over all target tokens of the batch, "sequence" over
packed sequences, each the mean of its own target tokens. Checked against a numpy
recomputation from the model's own logits, and under gradient accumulation."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from tests.models.test_tgg import tiny_config
from tgg_jax.train.state import create_state
from tgg_jax.train.step import loss_sum_and_count, make_train_step, sequence_weights


def test_sequence_weights_hand_worked():
    mask = np.array([[0, 1, 1, 1, 0, 0],
                     [1, 1, 1, 0, 0, 0]], bool)
    segments = np.array([[1, 1, 1, 2, 2, 0],   # two packed sequences: 2 targets, then 1, then padding
                         [1, 1, 1, 1, 1, 1]], np.int32)
    expected = [[0, 1 / 2, 1 / 2, 1, 0, 0],
                [1 / 3, 1 / 3, 1 / 3, 0, 0, 0]]
    np.testing.assert_allclose(sequence_weights(mask, segments), expected, rtol=1e-6)


def packed_batch(cfg, b=4, t=48):
    """Rows of two packed sequences with target counts that differ (so the two means differ)."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, (b, t)).astype(np.int32)
    ids[:, 1:1 + cfg.image_tokens] = cfg.image_token_id
    cut = [cfg.image_tokens + k for k in (6, 10, 12, 8)][:b]
    segments = np.ones((b, t), np.int32)
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
    mask = np.zeros((b, t), bool)
    for r, c in enumerate(cut):
        segments[r, c:] = 2
        positions[r, c:] -= c
        mask[r, 1 + cfg.image_tokens:c - 1] = True   # first sequence's answer
        mask[r, c + r:t - 1] = True                  # second sequence's: shorter with each row
    return {"input_ids": ids, "positions": positions, "segment_ids": segments,
            "targets": np.roll(ids, -1, axis=1), "target_mask": mask,
            "images": rng.integers(0, 256, (b, 1, cfg.image_size, cfg.image_size, 3), np.uint8),
            "objects": np.zeros((b, 0, cfg.image_size, cfg.image_size, 3), np.uint8)}


def reference_losses(model, batch):
    """Token-mean and sequence-mean cross-entropy from the full logits, in numpy."""
    logits = np.asarray(model(batch["input_ids"], positions=batch["positions"],
                              segment_ids=batch["segment_ids"], images=batch["images"],
                              objects=batch["objects"])[0], np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    ce = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    mask = batch["target_mask"]
    per_sequence = [ce[r][mask[r] & (batch["segment_ids"][r] == s)].mean()
                    for r in range(ce.shape[0]) for s in (1, 2)]
    return ce[mask].mean(), np.mean(per_sequence)


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_loss_matches_reference_and_accumulation(normalization):
    cfg = tiny_config()
    optimizer = optax.sgd(1.0)
    graphdef, _, init = create_state(cfg, optimizer, common.LLM_AND_PROJECTOR, seed=0)
    state = jax.jit(init)()
    batch = packed_batch(cfg)
    token_mean, sequence_mean = reference_losses(nnx.merge(graphdef, state.trainable, state.frozen), batch)
    assert abs(token_mean - sequence_mean) > 1e-3  # the test tells the two apart

    total, count = loss_sum_and_count(nnx.merge(graphdef, state.trainable, state.frozen), batch, 0, normalization)
    expected = token_mean if normalization == "token" else sequence_mean
    np.testing.assert_allclose(total / count, expected, rtol=1e-5)
    if normalization == "sequence":
        np.testing.assert_allclose(count, 8.0, rtol=1e-6)  # 4 rows x 2 sequences

    outs = []
    for accum in (1, 2):
        step = jax.jit(make_train_step(graphdef, optimizer, optax.constant_schedule(1.0),
                                       grad_accum_steps=accum, loss_normalization=normalization))
        outs.append(step(state, batch))
    (one, m1), (two, m2) = outs
    np.testing.assert_allclose(m1["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 two.trainable, one.trainable)


def test_unknown_normalization_is_rejected():
    cfg = tiny_config()
    optimizer = optax.sgd(1.0)
    graphdef, _, _ = create_state(cfg, optimizer, common.LLM_AND_PROJECTOR, seed=0)
    with pytest.raises(ValueError, match="loss_normalization"):
        make_train_step(graphdef, optimizer, optax.constant_schedule(1.0), loss_normalization="example")
