"""Stage 0 of the tiny model (tower alignment): per-cell targets, that it pulls the image tokens
onto their words' embeddings and trains only the towers and projector, and the trainer's use of
its checkpoint."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tgg_jax import checkpoint
from tgg_jax.data import shape_scenes
from tgg_jax.models.naming import tgg_name
from tgg_jax.models.tgg import TinyGroundingGPT
from tgg_jax.tiny import tower_align
from tgg_jax.train import state as state_lib
from tgg_jax.train import trainer
from tests.train.test_trainer import params_of, small_config


def test_cell_owners_hand_worked():
    # 200 x 100 pads to a 200-px square with the image 50 px down; a 4 x 4 grid has 50-px cells.
    big = shape_scenes.Shape("circle", "red", "large", (0.0, 0.0, 40.0, 40.0))      # padded y 50-90
    thin = shape_scenes.Shape("star", "blue", "small", (120.0, 10.0, 180.0, 30.0))  # padded y 60-80
    scene = shape_scenes.Scene(200, 100, "plain", 0, (big, thin))
    owners = tower_align.cell_owners(scene, 4)
    expected = np.full(16, -1)
    expected[1 * 4 + 0] = 0  # covers 1600 of the cell's 2500 px² (>= a third)
    # `thin` covers 600 px² of cells (1, 2) and (1, 3), under a third: only its centre's cell,
    # x = 150 -> column 3.
    expected[1 * 4 + 3] = 1
    np.testing.assert_array_equal(owners, expected)


def test_draw_batch_names_size_and_boxes_every_token():
    tokenizer = _FakeTokenizer()
    words = tower_align.word_ids(tokenizer)
    rng = np.random.default_rng(3)
    scene = shape_scenes.sample_scene(np.random.default_rng(3))  # the scene draw_batch will draw first
    images, crops, image_words, crop_words, boxes = tower_align.draw_batch(rng, 1, words, 4, 56, 4,
                                                                           size_word=True)
    assert image_words.shape[:3] == (1, 16, 3) and crop_words.shape[:3] == (1, 4, 3)
    owners = tower_align.cell_owners(scene, 4)
    side = max(scene.width, scene.height)
    dx, dy = (side - scene.width) // 2, (side - scene.height) // 2
    for i, o in enumerate(owners):
        if o < 0:
            r, c = divmod(i, 4)
            np.testing.assert_allclose(boxes[0, i], [c / 4, r / 4, (c + 1) / 4, (r + 1) / 4])
            assert (image_words[0, i] == words[tower_align.BACKGROUND]).all()
        else:
            s = scene.shapes[o]
            x1, y1, x2, y2 = s.box
            np.testing.assert_allclose(boxes[0, i], [(x1 + dx) / side, (y1 + dy) / side,
                                                     (x2 + dx) / side, (y2 + dy) / side], rtol=1e-6)
            assert [tuple(w) for w in image_words[0, i]] == [words[s.color], words[s.kind], words[s.size]]
    # A zoomed crop shows no size: its third slot names no word.
    assert (crop_words[0, :, 2] == -1).all()


def word_embedding(table, ids):
    """numpy: a word's embedding is the mean of its tokens' rows (ids padded with -1)."""
    rows = [table[i] for i in ids if i >= 0]
    return np.mean(rows, axis=0) if rows else np.zeros(table.shape[1])


def words_target(table, slots):
    """numpy: [..., W, L] padded word ids -> [..., D], the W words' embeddings summed."""
    slots = np.asarray(slots)
    out = np.zeros(slots.shape[:-2] + (table.shape[1],))
    for index in np.ndindex(*slots.shape[:-2]):
        out[index] = sum(word_embedding(table, word) for word in slots[index])
    return out


def test_box_code_is_orthogonal_to_the_words_and_decodes_back():
    tokenizer = _FakeTokenizer()
    words = tower_align.word_ids(tokenizer)
    table = jax.random.normal(jax.random.key(1), (128, 32)) * 0.05
    code = tower_align.box_code_basis(table, words)
    np_table = np.asarray(table, np.float64)
    used = np.array([word_embedding(np_table, v) for w, v in words.items() if w != tower_align.NO_WORD])
    np.testing.assert_allclose(used @ np.asarray(code), 0, atol=1e-6)
    gram = np.asarray(code.T @ code)
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(4), atol=1e-6)
    np.testing.assert_allclose(gram[0, 0], (used ** 2).sum(-1).mean(), rtol=1e-5)  # a word's size
    box = np.array([[0.1, 0.25, 0.4, 0.9]])
    token = words_target(np_table, [[words["red"], words["circle"], words["small"]]])
    token = token + (2 * box - 1) @ np.asarray(code, np.float64).T
    np.testing.assert_allclose(tower_align.decode_boxes(jnp.asarray(token, jnp.float32), code), box, atol=1e-5)


def test_box_weight_scales_only_the_error_along_the_box_code(data_dir, tmp_path):  # noqa: F811
    config = small_config(data_dir, **{"model.image_pool": 2})
    tokenizer = trainer.load_run_tokenizer(config, str(tmp_path))
    model = TinyGroundingGPT(state_lib.model_config(config, tokenizer).replace(freeze_towers=False),
                             rngs=nnx.Rngs(0))
    words = tower_align.word_ids(tokenizer)
    cfg = model.config
    batch = [jnp.asarray(x) for x in tower_align.draw_batch(
        np.random.default_rng(0), 2, words, cfg.image_grid, cfg.image_size, (cfg.grid // cfg.object_pool) ** 2,
        size_word=True)]
    table = model.llm.embed_tokens.embedding[...]
    code = tower_align.box_code_basis(table, words)
    loss1, pred = tower_align._loss(model, *batch, code, 1.0)
    loss3, _ = tower_align._loss(model, *batch, code, 3.0)
    # In numpy: each image token's target is its words' embeddings plus (2 box - 1) along the
    # code, each crop token's its words'; the error splits into its part along the code's
    # (orthogonal) directions and the rest, and is relative to the targets' squared norm.
    images, crops, image_words, crop_words, boxes = (np.asarray(x) for x in batch)
    np_table, np_code, np_pred = (np.asarray(x, np.float64) for x in (table, code, pred))
    words_only = np.concatenate([words_target(np_table, image_words), words_target(np_table, crop_words)], axis=1)
    box_part = np.zeros_like(words_only)
    box_part[:, :image_words.shape[1]] = (2 * boxes - 1) @ np_code.T
    target = words_only + box_part
    err = np_pred - target
    along = ((err @ (np_code / np.linalg.norm(np_code, axis=0))) ** 2).sum()
    norm = (target ** 2).sum()
    np.testing.assert_allclose(loss1, (err ** 2).sum() / norm, rtol=1e-5)
    np.testing.assert_allclose(loss3, ((err ** 2).sum() + 2 * along) / norm, rtol=1e-5)
    # Without a code the box is not a target at all, whatever its weight.
    expected = ((np_pred - words_only) ** 2).sum() / (words_only ** 2).sum()
    for weight in (1.0, 3.0):
        np.testing.assert_allclose(tower_align._loss(model, *batch, None, weight)[0], expected, rtol=1e-5)


def test_clip_norm_clips_the_stage_gradients(data_dir, tmp_path):  # noqa: F811
    """Clipped to 1e-12, far below Adam's eps (1e-8), a step moves the projector by about
    lr * 1e-4 instead of about lr: the clip reaches the optimizer."""
    config = small_config(data_dir, **{"model.image_pool": 2})
    tokenizer = trainer.load_run_tokenizer(config, str(tmp_path))
    model_cfg = state_lib.model_config(config, tokenizer).replace(freeze_towers=False)
    moved = {}
    for clip in (0.0, 1e-12):
        model = TinyGroundingGPT(model_cfg, rngs=nnx.Rngs(0))
        before = flat_params(model)["projector.linear_1.kernel"]
        tower_align.align(model, tokenizer, steps=1, lr=1e-2, batch_size=2, seed=0, clip_norm=clip)
        moved[clip] = np.abs(flat_params(model)["projector.linear_1.kernel"] - before).max()
    assert moved[0.0] > 1e-3 and moved[1e-12] < 1e-2 * moved[0.0], moved


def test_stage_lr_is_held_then_decays_over_the_last_part():
    assert tower_align.lr_schedule(2e-3, 100, 0.0) == 2e-3  # off: the constant rate as before
    schedule = tower_align.lr_schedule(2e-3, 100, 0.3)
    np.testing.assert_allclose([schedule(s) for s in (0, 69, 70)], [2e-3] * 3, rtol=1e-6)
    # Cosine over steps 70..100: half-way (step 85) at half the rate, ~0 at the end.
    np.testing.assert_allclose(schedule(85), 1e-3, rtol=1e-5)
    assert 0 <= schedule(99) < 2e-3 * 0.01 and schedule(100) == 0
    with pytest.raises(ValueError, match="decay_ratio"):
        tower_align.lr_schedule(2e-3, 100, 1.5)


class _FakeTokenizer:
    """One or two ids per word, as a BPE gives: enough for word_ids' padding."""

    def encode(self, text: str) -> list[int]:
        return [3 + sum(map(ord, text)) % 50, 60 + len(text)][: 1 + len(text) % 2]


def flat_params(model) -> dict[str, np.ndarray]:
    return {tgg_name(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_align_pulls_tokens_onto_their_words_and_trains_only_towers_and_projector(data_dir, tmp_path):  # noqa: F811
    config = small_config(data_dir, **{"model.image_pool": 2, "model.vision_layers": 2})
    tokenizer = trainer.load_run_tokenizer(config, str(tmp_path))
    model_cfg = state_lib.model_config(config, tokenizer)
    model = TinyGroundingGPT(model_cfg.replace(freeze_towers=False), rngs=nnx.Rngs(0))
    before = flat_params(model)
    m = tower_align.align(model, tokenizer, steps=150, lr=3e-3, batch_size=8, seed=0, log_every=50)
    assert m["relative_error"] < 0.6 * m["relative_error_before"], m
    # The colour word nearest a shape's token names its colour more often (chance: 1 in 6).
    assert m["colour_match"] > max(m["colour_match_before"] + 0.07, 0.25), m
    after = flat_params(model)
    moved = {name for name in before if not np.array_equal(before[name], after[name])}
    assert not {name for name in moved if name.startswith("llm.")}
    assert {name for name in before if name.startswith("projector.")} <= moved
    # Only what the penultimate layer's features depend on can move in each tower.
    for tower in ("clip.", "dinov2."):
        assert any(name.startswith(tower + "layers.0.") for name in moved), (tower, sorted(moved))


def test_trainer_starts_from_the_aligned_checkpoint_and_reuses_it(data_dir, tmp_path, monkeypatch):  # noqa: F811
    config = small_config(data_dir, **{"tower_align.steps": 3, "tower_align.batch_size": 4})
    workdir = str(tmp_path / "w")
    run = trainer.setup(config, workdir, with_data=False)
    aligned = os.path.join(workdir, tower_align.ALIGNED_DIR)
    with open(os.path.join(aligned, tower_align.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["steps"] == 3 and report["seconds"] > 0 and "colour_match" in report
    saved, _ = checkpoint.load_params(aligned)
    flat = {tgg_name(p): np.asarray(v) for p, v in nnx.to_flat_state(nnx.State(saved))}
    started = params_of(run)
    assert flat.keys() == started.keys()
    for name in flat:
        np.testing.assert_array_equal(started[name], flat[name], err_msg=name)
    fresh = params_of(trainer.setup(small_config(data_dir), str(tmp_path / "fresh"), with_data=False))
    assert not np.array_equal(fresh["projector.linear_1.kernel"], started["projector.linear_1.kernel"])
    # The LLM is the fresh one (eager vs jitted initialisation: last-bit differences).
    np.testing.assert_allclose(fresh["llm.embed_tokens.embedding"], started["llm.embed_tokens.embedding"],
                               rtol=1e-6, atol=1e-7)

    def must_not_align(*args, **kwargs):
        raise AssertionError("aligned again")
    monkeypatch.setattr(tower_align, "align", must_not_align)
    again = params_of(trainer.setup(config, workdir, with_data=False))
    np.testing.assert_array_equal(again["projector.linear_1.kernel"], started["projector.linear_1.kernel"])


def test_stage0_is_for_the_tiny_preset_only(data_dir):  # noqa: F811
    config = small_config(data_dir, **{"tower_align.steps": 5, "model.preset": "3b"})
    with pytest.raises(ValueError, match="tower_align is for the from-scratch tiny"):
        tower_align.check(config)
    tower_align.check(small_config(data_dir, **{"tower_align.steps": 5}))
