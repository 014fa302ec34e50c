"""A learning diagnostic: CLIP's language-tied features in miniature, for the from-scratch tiny model.

The toy (`benchmarks/binding_toy.py`) learns yes/no from scratch only when the image tokens
already sit near the question's word embeddings. This script gives the tiny model such towers:
it trains the tiny CLIP/DINOv2 towers and the projector (the LLM held fixed) so that each pooled
global-image token regresses onto the summed embeddings of the colour and kind words of the shape
under it (two copies of the "," token for background) and each object-crop token onto its shape's
words, on freshly drawn tgg_shapes scenes. It then saves a parameter checkpoint that the main
command can start from:

    python benchmarks/tiny_align.py --workdir runs/tiny_aligned --steps 2000
    tgg-train --config configs/tiny.py --workdir runs/tiny_aligned \
        --config.init_from=runs/tiny_aligned/aligned --config.model.image_pool=2 --config.lr=5e-4

Unlike the paper's CLIP this uses the generator's shape boxes for per-token targets, so it is a
diagnostic of the conditions, not the paper's recipe (README, session 9: with it, several yes/no
questions per image and 3000 steps the tiny model learns yes/no). It prints the relative squared
error and, for shape tokens, how often the best-matching colour word is the right one, on 64
held-out scenes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from configs import tiny  # noqa: E402
from tgg_jax import checkpoint  # noqa: E402
from tgg_jax.data import shapes  # noqa: E402
from tgg_jax.data.coords import pad_offset  # noqa: E402
from tgg_jax.data.preprocess import crop_object, preprocess_image  # noqa: E402
from tgg_jax.models import qwen2  # noqa: E402
from tgg_jax.models.tgg import TinyGroundingGPT  # noqa: E402
from tgg_jax.train import state as state_lib  # noqa: E402
from tgg_jax.train.trainer import load_run_tokenizer  # noqa: E402


def word_ids(tokenizer, word: str) -> list[int]:
    """The ids of `word` as it appears inside a question (after a space)."""
    return tokenizer.encode(" " + word)


def cell_targets(scene, grid: int):
    """Per cell of the grid x grid pooled token grid: the index of the shape it shows, or -1.

    A shape claims the cell holding its centre and every cell it covers by at least a third."""
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


def make_batch(rng, n, words, grid, size, crop_tokens):
    """(images uint8 [n,S,S,3], crops uint8 [n,S,S,3], image targets [n,grid²,2,L], crop targets
    [n,crop_tokens,2,L]) where the last axes hold word-id lists padded with -1."""
    images, crops, image_words, crop_words = [], [], [], []
    background = words[","]
    for _ in range(n):
        scene = shapes.sample_scene(rng)
        img = shapes.render_scene(scene).convert("RGB")
        images.append(preprocess_image(img, size))
        owner = cell_targets(scene, grid)
        image_words.append([(words[scene.shapes[o].color], words[scene.shapes[o].kind]) if o >= 0
                            else (background, background) for o in owner])
        s = scene.shapes[rng.integers(len(scene.shapes))]
        crops.append(preprocess_image(crop_object(img, s.box), size))
        crop_words.append([(words[s.color], words[s.kind])] * crop_tokens)
    return (np.stack(images), np.stack(crops), np.array(image_words), np.array(crop_words))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="the main command's workdir (its tokenizer is shared)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--image_pool", type=int, default=2)
    p.add_argument("--mimetic", type=float, default=1.0, help="mimetic gain for the LLM (0: off)")
    p.add_argument("--seed", type=int, default=0, help="training scenes (the model starts from config.seed)")
    args = p.parse_args()

    config = tiny.get_config()
    config.model.image_pool = args.image_pool
    tokenizer = load_run_tokenizer(config, args.workdir)
    model_cfg = state_lib.model_config(config, tokenizer)
    model = TinyGroundingGPT(model_cfg.replace(freeze_towers=False), rngs=nnx.Rngs(config.seed))
    if args.mimetic:
        qwen2.mimetic_init(model.llm, args.mimetic)
    ids = {w: word_ids(tokenizer, w) for w in (*shapes.KINDS, *shapes.COLORS)}
    ids[","] = tokenizer.encode(",")
    longest = max(len(v) for v in ids.values())
    words = {w: tuple(v) + (-1,) * (longest - len(v)) for w, v in ids.items()}
    grid = model_cfg.grid // args.image_pool
    crop_tokens = (model_cfg.grid // model_cfg.object_pool) ** 2
    size = model_cfg.image_size
    print(f"word tokens: {ids}; {grid}x{grid} image tokens, {crop_tokens} per crop", flush=True)

    def embed_words(table, w):
        """[..., 2, L] padded word ids -> [..., D]: each word's mean token embedding, summed."""
        valid = (w >= 0)[..., None]
        e = (table[jnp.maximum(w, 0)] * valid).sum(-2) / valid.sum(-2)
        return e.sum(-2)

    def tokens(model, pixels, pool):
        return model.projector(model._pool(model.visual_features(pixels), pool))

    def loss_fn(model, images, crops, image_words, crop_words):
        table = jax.lax.stop_gradient(model.llm.embed_tokens.embedding[...])
        pred = jnp.concatenate([tokens(model, images, args.image_pool),
                                tokens(model, crops, model_cfg.object_pool)], axis=1)
        target = jnp.concatenate([embed_words(table, image_words), embed_words(table, crop_words)], axis=1)
        return ((pred - target) ** 2).mean() / (target ** 2).mean(), (pred, target)

    wrt = nnx.Any(nnx.PathContains("clip"), nnx.PathContains("dinov2"), nnx.PathContains("projector"))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.All(nnx.Param, wrt))

    @nnx.jit
    def train_step(model, optimizer, *batch):
        trained = nnx.DiffState(0, nnx.All(nnx.Param, wrt))
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True, argnums=trained)(model, *batch)
        optimizer.update(model, grads)
        return loss

    table = model.llm.embed_tokens.embedding[...]
    colour_table = jnp.stack([table[jnp.array(ids[c])].mean(0) for c in shapes.COLORS])

    @nnx.jit
    def evaluate(model, images, crops, image_words, crop_words):
        loss, (pred, _) = loss_fn(model, images, crops, image_words, crop_words)
        shape_tokens = image_words[..., 0, 0] != words[","][0]
        # The colour word whose embedding best matches the token (largest dot product): its colour?
        colour_of = jnp.argmax((image_words[..., 0, :][..., None, :] ==
                                jnp.array([words[c] for c in shapes.COLORS])).all(-1), -1)
        pi = pred[:, :image_words.shape[1]]
        right = ((pi @ colour_table.T).argmax(-1) == colour_of) & shape_tokens
        return loss, right.sum() / shape_tokens.sum()

    held_out = tuple(jnp.asarray(x) for x in make_batch(np.random.default_rng(10_000), 64, words,
                                                        grid, size, crop_tokens))
    rng = np.random.default_rng(args.seed)
    start = time.time()
    loss, acc = evaluate(model, *held_out)
    print(f"step 0 held-out relative error {float(loss):.3f} colour match {float(acc):.3f}", flush=True)
    for step in range(1, args.steps + 1):
        batch = make_batch(rng, args.batch, words, grid, size, crop_tokens)
        train_step(model, optimizer, *(jnp.asarray(x) for x in batch))
        if step % 50 == 0 or step == args.steps:
            loss, acc = evaluate(model, *held_out)
            rate = step / (time.time() - start)
            print(f"step {step}/{args.steps} held-out relative error {float(loss):.3f} colour match "
                  f"{float(acc):.3f} ({rate:.2f} steps/s, ETA {(args.steps - step) / rate:.0f} s)",
                  flush=True)
    out = os.path.join(os.path.abspath(args.workdir), "aligned")
    checkpoint.save_params(out, checkpoint.to_host(nnx.state(model, nnx.Param).to_pure_dict()), model_cfg)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
