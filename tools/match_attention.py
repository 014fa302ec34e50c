"""A learning diagnostic: does the question's colour word attend to the image tokens of that colour?

Yes/no needs the question to find its matching image tokens and then to read out whether it
found any. This script measures the first half on a checkpoint of the tiny model (any parameter
checkpoint or trainer step directory), per decoder layer, on tgg_shapes test yes/no questions:

- preference: the share of the colour word's image attention that lands on cells showing a shape
  of that colour, divided by those cells' share of the image (1 = no preference), on "yes"
  questions (heads averaged);
- image mass and largest single-cell weight of the colour word's attention, on "yes" and on "no"
  questions: a difference is what a readout of "found it" could use;
- whether the answer is there to read at all: the largest cosine between an image token (after
  the projector) and the question's colour word embedding (and colour + kind words), turned
  into yes/no by a threshold fitted on the first half of the questions and scored on the second.

    python tools/match_attention.py --tokenizer runs/tiny/tokenizer runs/tiny/checkpoints/600

Cells are the pooled image tokens; a shape owns a cell as in `tgg_jax/tiny/tower_align.py`.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tgg_jax.attention_maps import every_layer_attention  # noqa: E402
from tgg_jax.data import shape_scenes, shapes  # noqa: E402
from tgg_jax.data.example_spec import for_model  # noqa: E402
from tgg_jax.data.template import encode_conversation  # noqa: E402
from tgg_jax.data.tokenizer import load_tokenizer  # noqa: E402
from tgg_jax.inference import prompt_inputs  # noqa: E402
from tgg_jax.inference import load_model  # noqa: E402
from tgg_jax.tiny.tower_align import cell_owners  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--tokenizer", required=True, help="the run's tokenizer directory (WORKDIR/tokenizer)")
    p.add_argument("--records", type=int, default=200, help="test records drawn as yes/no questions")
    args = p.parse_args()
    tokenizer = load_tokenizer(args.tokenizer)
    for path in args.checkpoints:
        model, cfg = load_model(path)
        grid = int(round(cfg.image_tokens ** 0.5))
        preference, found, probe = [], {True: [], False: []}, []
        table = np.asarray(model.llm.embed_tokens.embedding[...])
        for i in range(args.records):
            record = shapes.make_record(0, "test", i, tasks=("yesno",))
            question, answer = (turn["value"] for turn in record["conversations"])
            scene = shape_scenes.sample_scene(shapes.record_rng(0, "test", i))  # the record's own scene
            colour = next(c for c in shape_scenes.COLORS if f" {c} " in question)
            turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
            ids = encode_conversation(turns, tokenizer, num_images=1, num_objects=0,
                                      image_tokens=cfg.image_tokens, object_tokens=cfg.object_tokens,
                                      max_length=cfg.llm.max_position_embeddings).input_ids
            pixels = prompt_inputs(turns[:1], record["image"], np.zeros((0, 4), np.float32), tokenizer,
                                   for_model(cfg, max_objects=0))
            word = np.flatnonzero(ids == tokenizer.encode(" " + colour)[0])[-1]
            cells = np.flatnonzero(ids == cfg.image_token_id)
            probs = every_layer_attention(model, jnp.asarray(ids[None]), jnp.asarray(pixels["images"][None]))
            a = np.asarray(probs)[:, 0, :, word][..., cells]  # [L, heads, cells]
            positive = answer.lower().startswith("yes")
            found[positive].append((a.sum(-1).mean(-1), a.max(-1).mean(-1)))
            kind = next(k for k in shape_scenes.KINDS if f" {k} " in question)
            embeds = np.asarray(model.embed_inputs(jnp.asarray(ids[None]), jnp.asarray(pixels["images"][None]),
                                                   None))[0, cells]
            words = [table[tokenizer.encode(" " + w)].sum(0) for w in (colour, kind)]
            probe.append([largest_cosine(embeds, words[0]), largest_cosine(embeds, words[0] + words[1]),
                          positive])
            match = np.array([o >= 0 and scene.shapes[o].color == colour for o in cell_owners(scene, grid)])
            if positive and match.any():
                preference.append((a[..., match].sum(-1) / a.sum(-1)).mean(-1) / match.mean())
        print(f"{path}: {len(preference)} yes questions with a matching cell")
        print(f"  preference for matching cells per layer (1 = none): {np.round(np.mean(preference, 0), 2)}")
        for positive in (True, False):
            mass, top = np.mean(found[positive], 0)
            print(f"  {'yes' if positive else 'no '} ({len(found[positive])}): image mass {np.round(mass, 3)}, "
                  f"largest cell {np.round(top, 3)}")
        probe = np.asarray(probe)
        for j, name in enumerate(("colour word", "colour + kind words")):
            print(f"  threshold on the largest cosine of an image token with the {name}: "
                  f"{threshold_accuracy(probe[:, j], probe[:, 2].astype(bool)):.3f} yes/no accuracy")


def largest_cosine(cells: np.ndarray, word: np.ndarray) -> float:
    return float(np.max(cells @ word / (np.linalg.norm(cells, axis=1) * np.linalg.norm(word))))


def threshold_accuracy(score: np.ndarray, yes: np.ndarray) -> float:
    """Accuracy on the second half of "score >= t means yes", t fitted on the first half."""
    half = len(score) // 2
    fit = max(np.unique(score[:half]), key=lambda t: np.mean((score[:half] >= t) == yes[:half]))
    return float(np.mean((score[half:] >= fit) == yes[half:]))


if __name__ == "__main__":
    main()
