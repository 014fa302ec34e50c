"""Stage 0 of the from-scratch tiny model: its towers and projector aligned to the LLM's word space.

The paper's towers arrive pretrained, CLIP's features already tied to language; the tiny model's
towers are random. This stage gives them that property in miniature: it trains the tiny CLIP and
DINOv2 towers and the projector (the LLM held fixed) so that each pooled global-image token
regresses onto the summed embeddings of the colour and kind words of the shape under it (two
"," tokens for background), and each object-crop token onto its shape's words. Scenes are drawn
fresh from the tgg_shapes generator on a stream of their own (`tower_align.seed`), never from a
split, and the per-token targets come from the generator's boxes, the labelled corpus this
stage's "pretraining" stands for.

REC needs more than words: where a shape is. Regressed onto words alone, the image tokens lose
their position (the target does not depend on it). With
`tower_align.box_code` each image token's target also holds its shape's box (a background
token's: its own cell), written along 4 directions orthogonal to every target word so that
the words' match is untouched, as a real tower's features carry both what and where;
`size_word` adds the size word ("small") that REC expressions use.

Why: without image tokens in the word space the tiny model stays at chance on yes/no in a
CPU-sized run; with them (2000 steps) the tiny default answers 0.84 of the held-out yes/no
questions (docs/tiny_model.md).

`ensure_aligned`, the tiny configs' config.init_hook, runs it once per workdir and saves a
parameter checkpoint (WORKDIR/aligned) the trainer then starts from, like `init_from`; a resumed
run skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from tgg_jax import checkpoint
from tgg_jax.data import shape_render, shape_scenes
from tgg_jax.data.coords import pad_offset, pixel_to_square
from tgg_jax.data.preprocess import crop_object, preprocess_image
from tgg_jax.evals.rec import box_iou
from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT
from tgg_jax.train import optimizer as opt_lib
from tgg_jax.train import state as state_lib

PRESET = "tgg_jax.tiny.model:preset"  # config.model.preset of the tiny configs
ALIGNED_DIR = "aligned"
REPORT_FILE = "tower_align.json"  # inside ALIGNED_DIR: the stage's metrics and seconds
BACKGROUND = ","
TRAINED = nnx.Any(nnx.PathContains("clip"), nnx.PathContains("dinov2"), nnx.PathContains("projector"))


NO_WORD = ""  # a target slot with no word (a crop's size: a zoomed crop shows none)


def word_ids(tokenizer) -> dict[str, tuple[int, ...]]:
    """Token ids of every colour, kind and size word as it appears inside a question (after a
    space), of the background marker, and NO_WORD (no ids); padded with -1 to one length."""
    words = (*shape_scenes.KINDS, *shape_scenes.COLORS, *shape_scenes.SIZES)
    ids = {w: tokenizer.encode(" " + w) for w in words}
    ids[BACKGROUND] = tokenizer.encode(BACKGROUND)
    ids[NO_WORD] = []
    longest = max(len(v) for v in ids.values())
    return {w: tuple(v) + (-1,) * (longest - len(v)) for w, v in ids.items()}


def cell_owners(scene: shape_scenes.Scene, grid: int) -> np.ndarray:
    """[grid²] the index of the shape each cell of the pooled token grid shows, or -1.

    The image is padded to a square (SPEC §2) before the grid is laid over it. A shape claims
    the cell holding its centre and every cell it covers by at least a third."""
    side = max(scene.width, scene.height)
    dx, dy = pad_offset(scene.width, scene.height)
    cell = side / grid
    owner = np.full((grid, grid), -1)
    for i, s in enumerate(scene.shapes):
        x1, y1, x2, y2 = s.box[0] + dx, s.box[1] + dy, s.box[2] + dx, s.box[3] + dy
        for r in range(grid):
            for c in range(grid):
                ox = max(0.0, min(x2, (c + 1) * cell) - max(x1, c * cell))
                oy = max(0.0, min(y2, (r + 1) * cell) - max(y1, r * cell))
                if ox * oy >= cell * cell / 3:
                    owner[r, c] = i
        owner[min(int((y1 + y2) / 2 / cell), grid - 1), min(int((x1 + x2) / 2 / cell), grid - 1)] = i
    return owner.reshape(-1)


def cell_boxes(grid: int) -> np.ndarray:
    """[grid², 4] each cell's own box [x1, y1, x2, y2] in the padded square's [0, 1] coordinates."""
    r, c = np.divmod(np.arange(grid * grid), grid)
    return np.stack([c, r, c + 1, r + 1], -1) / grid


def draw_batch(rng: np.random.Generator, n: int, words: dict, grid: int, size: int, crop_tokens: int,
               size_word: bool = False):
    """n fresh scenes -> (images uint8 [n,S,S,3], crops uint8 [n,S,S,3] of one random shape each,
    image targets [n, grid², W, L], crop targets [n, crop_tokens, W, L], image boxes [n, grid², 4]):
    per token the padded word ids of (colour, kind) or, with `size_word`, (colour, kind, size);
    per image token the box of the shape under it (SPEC §2's padded-square coordinates), or the
    cell's own box for background."""
    images, crops, image_words, crop_words, image_boxes = [], [], [], [], []
    nwords = 3 if size_word else 2
    background = (words[BACKGROUND],) * nwords
    own_boxes = cell_boxes(grid)

    def named(s: shape_scenes.Shape, shown_size: bool) -> tuple:
        return ((words[s.color], words[s.kind], words[s.size if shown_size else NO_WORD])[:nwords])

    for _ in range(n):
        scene = shape_scenes.sample_scene(rng)
        img = shape_render.render_scene(scene).convert("RGB")
        images.append(preprocess_image(img, size))
        owners = cell_owners(scene, grid)
        image_words.append([named(scene.shapes[o], True) if o >= 0 else background for o in owners])
        boxes = [pixel_to_square(s.box, scene.width, scene.height) for s in scene.shapes]
        image_boxes.append([boxes[o] if o >= 0 else own_boxes[i] for i, o in enumerate(owners)])
        s = scene.shapes[rng.integers(len(scene.shapes))]
        crops.append(preprocess_image(crop_object(img, s.box), size))
        crop_words.append([named(s, False)] * crop_tokens)
    return (np.stack(images), np.stack(crops), np.array(image_words), np.array(crop_words),
            np.array(image_boxes, np.float32))


def _word_embedding(table: jax.Array, w: jax.Array) -> jax.Array:
    """[..., L] padded word ids -> [..., D]: the word's mean token embedding."""
    valid = (w >= 0)[..., None]
    return (table[jnp.maximum(w, 0)] * valid).sum(-2) / jnp.maximum(valid.sum(-2), 1)


def _embed_words(table: jax.Array, w: jax.Array) -> jax.Array:
    """[..., W, L] padded word ids -> [..., D]: their embeddings summed (NO_WORD adds nothing)."""
    return _word_embedding(table, w).sum(-2)


def box_code_basis(table: jax.Array, words: dict, dim: int = 4) -> jax.Array:
    """[D, dim] orthonormal directions orthogonal to every target word's embedding, scaled to a
    word embedding's RMS norm: the box code lives where it disturbs no word's match.

    Deterministic in the (fixed) embedding table, so the main stage can rebuild it."""
    vocab = jnp.stack([_word_embedding(table, jnp.array(v)) for w, v in words.items() if w != NO_WORD])
    words_basis = jnp.linalg.svd(vocab.T, full_matrices=False)[0]  # [D, #words]
    rand = jax.random.normal(jax.random.key(0), (table.shape[1], dim), jnp.float32)
    rand = rand - words_basis @ (words_basis.T @ rand)
    q = jnp.linalg.qr(rand)[0]
    return q * jnp.sqrt((vocab ** 2).sum(-1).mean())


def _loss(model: TinyGroundingGPT, images, crops, image_words, crop_words, image_boxes, code=None,
          box_weight=1.0):
    """Relative squared error of the image and crop tokens against their words' embeddings, plus
    for image tokens `code` @ (2 box - 1) when a box code is on (`code` [D, 4]); the error along
    the code's directions weighs `box_weight` times."""
    cfg = model.config
    table = jax.lax.stop_gradient(model.llm.embed_tokens.embedding[...])
    pred = jnp.concatenate([model.project(model.visual_features(images), cfg.image_pool),
                            model.project(model.visual_features(crops), cfg.object_pool)], axis=1)
    image_target = _embed_words(table, image_words)
    if code is not None:
        image_target = image_target + (2 * image_boxes - 1) @ code.T
    target = jnp.concatenate([image_target, _embed_words(table, crop_words)], axis=1)
    error = ((pred - target) ** 2).mean()
    if code is not None and box_weight != 1:
        along = (pred - target) @ (code / jnp.linalg.norm(code, axis=0))
        error = error + (box_weight - 1) * (along ** 2).sum(-1).mean() / pred.shape[-1]
    return error / (target ** 2).mean(), pred


def decode_boxes(tokens: jax.Array, code: jax.Array) -> jax.Array:
    """[..., D] image tokens -> [..., 4] the boxes their box code reads (least squares)."""
    return ((tokens @ code) / (code ** 2).sum(0) + 1) / 2


def lr_schedule(lr: float, steps: int, decay_ratio: float) -> optax.Schedule | float:
    """`lr` held, then (decay_ratio > 0) a cosine to 0 over the last decay_ratio of the steps,
    the main stage's schedule without its warm-up: the box code's precision comes in the decay
    (box match 0.478 against 0.424 held, 2000 steps), as REC's does in the main stage."""
    if not 0.0 <= decay_ratio <= 1.0:  # named here: the shared schedule's error names the main stage's key
        raise ValueError(f"config.tower_align.decay_ratio must be in [0, 1], got {decay_ratio}")
    if not decay_ratio:
        return lr
    return opt_lib.learning_rate_schedule(ml_collections.ConfigDict(
        {"lr": lr, "total_steps": steps, "warmup_ratio": 0.0, "decay_ratio": decay_ratio}))


def align(model: TinyGroundingGPT, tokenizer, *, steps: int, lr: float, batch_size: int, seed: int,
          size_word: bool = False, box_code: float = 0.0, box_weight: float = 1.0,
          clip_norm: float = 0.0, decay_ratio: float = 0.0, log_every: int = 50) -> dict:
    """Train `model`'s towers and projector in place; returns the held-out relative error and
    colour match (how often the colour word with the largest dot product is the shape's own,
    over shape tokens of 64 held-out scenes) before and after; with a box code, also how often
    the box a shape token's code reads overlaps its shape's by IoU >= 0.5 (`box_match`)."""
    cfg = model.config
    words = word_ids(tokenizer)
    grid = cfg.image_grid
    crop_tokens = (cfg.grid // cfg.object_pool) ** 2
    table = model.llm.embed_tokens.embedding[...]
    code = box_code * box_code_basis(table, words) if box_code else None
    adam = optax.adam(lr_schedule(lr, steps, decay_ratio))
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), adam) if clip_norm else adam
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.All(nnx.Param, TRAINED))

    @nnx.jit
    def train_step(model, optimizer, *batch):
        trained = nnx.DiffState(0, nnx.All(nnx.Param, TRAINED))
        (loss, _), grads = nnx.value_and_grad(_loss, has_aux=True, argnums=trained)(model, *batch, code, box_weight)
        optimizer.update(model, grads)
        return loss

    colours = jnp.array([words[c] for c in shape_scenes.COLORS])

    @nnx.jit
    def evaluate(model, images, crops, image_words, crop_words, image_boxes):
        loss, pred = _loss(model, images, crops, image_words, crop_words, image_boxes, code, box_weight)
        colour_table = _word_embedding(table, colours)
        shape_tokens = image_words[..., 0, 0] != words[BACKGROUND][0]
        colour_of = jnp.argmax((image_words[..., 0, :][..., None, :] == colours).all(-1), -1)
        image_pred = pred[:, :image_words.shape[1]]
        best = (image_pred @ colour_table.T).argmax(-1)
        return (loss, ((best == colour_of) & shape_tokens).sum() / shape_tokens.sum(), shape_tokens,
                None if code is None else decode_boxes(image_pred, code))

    def measure(model, held_out) -> dict:
        error, match, shape_tokens, boxes = evaluate(model, *held_out)
        out = {"relative_error": float(error), "colour_match": float(match)}
        if box_code:
            shape_tokens, boxes, truth = (np.asarray(x) for x in (shape_tokens, boxes, held_out[-1]))
            out["box_match"] = float(np.mean([box_iou(b, t) >= 0.5 for b, t in
                                              zip(boxes[shape_tokens], truth[shape_tokens])]))
        return out

    draw = lambda rng, n: draw_batch(rng, n, words, grid, cfg.image_size, crop_tokens, size_word)
    # A scene stream of its own for the held-out scenes, apart from the training stream.
    held_out = [jnp.asarray(x) for x in draw(np.random.default_rng(10_000 + seed), 64)]
    rng = np.random.default_rng(seed)
    before = result = measure(model, held_out)
    logging.info("tower alignment: step 0 held-out %s", before)
    start = time.time()
    # Drawing scenes (PIL, ~40 % of a step) overlaps the previous step: one worker draws the
    # batches in order from the same generator, so the stream is the same as drawn inline.
    # nnx.jit walks the model's graph on every call (~7 ms of a ~94 ms step here);
    # cached_partial walks it once.
    cached_step = nnx.cached_partial(train_step, model, optimizer)
    with ThreadPoolExecutor(max_workers=1) as pool:
        next_batch = pool.submit(draw, rng, batch_size)
        for step in range(1, steps + 1):
            batch = next_batch.result()
            if step < steps:
                next_batch = pool.submit(draw, rng, batch_size)
            cached_step(*(jnp.asarray(x) for x in batch))
            if step % log_every == 0 or step == steps:  # the last step's values are the result
                result = measure(model, held_out)
                rate = step / (time.time() - start)
                shown = " ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in result.items())
                print(f"[tower alignment {step}/{steps}] held-out {shown} | {rate:.2f} steps/s "
                      f"ETA {(steps - step) / rate:.0f} s", flush=True)
    return {**{f"{k}_before": v for k, v in before.items()}, **result}


def check(config) -> None:
    """Stage 0 trains towers from scratch: only the tiny preset has such towers."""
    if config.tower_align.steps > 0 and config.model.preset != PRESET:
        raise ValueError("config.tower_align is for the from-scratch tiny model; the "
                         f"{config.model.preset} preset imports pretrained towers")


def ensure_aligned(config, workdir: str, tokenizer, model_cfg: TGGConfig) -> str | None:
    """config.init_hook of the tiny configs: WORKDIR/aligned, the stage-0 parameter checkpoint,
    trained first when it is not there; None (a fresh start) when config.tower_align.steps is 0.

    The model starts as the trainer's fresh state would (`state.fresh_model`), and the whole
    checkpoint is loaded, so the LLM the main stage sees is the one whose embeddings the towers
    were aligned to."""
    check(config)
    if config.tower_align.steps <= 0:
        return None
    out = os.path.join(workdir, ALIGNED_DIR)
    if os.path.isfile(os.path.join(out, checkpoint.CONFIG_FILE)):
        return out
    if jax.process_count() > 1:
        raise ValueError("config.tower_align runs in one process: run the config once on one host "
                         f"(it writes {out}), then start the multi-host run from the same workdir")
    a = config.tower_align
    logging.info("tower alignment (stage 0): %d steps of %d scenes into %s", a.steps, a.batch_size, out)
    # Towers unfrozen for this stage only; the parameters start as the trainer's would.
    model = state_lib.fresh_model(model_cfg.replace(freeze_towers=False), config.seed,
                                  state_lib.param_init(config))
    start = time.time()
    metrics = align(model, tokenizer, steps=a.steps, lr=a.lr, batch_size=a.batch_size, seed=a.seed,
                    size_word=a.size_word, box_code=a.box_code, box_weight=a.box_weight,
                    clip_norm=a.clip_norm, decay_ratio=a.decay_ratio)
    metrics.update(steps=a.steps, seconds=time.time() - start)
    logging.info("tower alignment done: %s", metrics)
    params = checkpoint.to_host(nnx.state(model, nnx.Param).to_pure_dict())
    # Written whole, then renamed: a run stopped mid-way has no checkpoint here and aligns again.
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.save_params(tmp, params, model_cfg)
    with open(os.path.join(tmp, REPORT_FILE), "w") as f:
        json.dump(metrics, f, indent=1)
    os.replace(tmp, out)
    return out
