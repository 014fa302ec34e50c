"""Padded fraction of stage 1, 2 and 3 batches with bucketed padding (pipeline.pad_batch's rule:
each host batch padded to the smallest bucket of 512 / 1024 / 2048 holding its longest example)
and with packing (packing.pack, rows of 2048 tokens, packing.default_packing_spec's image and
object slots), on example lengths drawn from stated statistics of the real mixtures.

    python benchmarks/padding.py [--examples 20000] [--hosts_batch stage=B ...]

Prints, per stage: the share of token slots that hold padding, and the share of the towers'
image / object slots that hold a real image (the towers run on every slot). The packed rows
come from tgg_jax.data.packing itself (examples with 1-pixel images).

Lengths: ChatML overhead measured with the Qwen2.5 tokenizer (system turn + first turn headers
21 tokens, each further turn 10, "<image>\\n" 577 = 576 + newline, each <object> run 576 tokens,
object_pool=1). Text lengths per source (tokens; lognormal with the stated median and sigma,
clipped to the row) are estimates from the datasets' descriptions:
  stage 1  LLaVA-Pretrain-558K: one turn, instruction ~8 tokens, BLIP caption median 15 (sigma
           0.35) (LLaVA paper: short captions).
  stage 2  Table 6 of the paper by weight: RefCOCO/+/g and Visual Genome REC/region captions,
           question ~22 + expression/caption median 8, answer (box) 24 tokens: one image;
           LLaVA image_box (210K): one image and one <object>, text median 60; text_image (46K):
           one image, text median 80.
  stage 3  mix665k (665K): 1-10 turns (mean ~3), text median 150 (sigma 0.8), 6 % text-only
           ShareGPT with median 700; ShareGPT4V (102K): one turn, caption median 230 (sigma 0.3);
           grounding conversations (40K): one image, 1-3 objects, text median 150;
           grounding descriptions (32K): one image, 1-2 objects, text median 120.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grain  # noqa: E402
import numpy as np  # noqa: E402

from tgg_jax.data import packing  # noqa: E402
from tgg_jax.data.example_spec import ExampleSpec  # noqa: E402
from tgg_jax.data.pipeline import bucket_length  # noqa: E402

SYSTEM_AND_FIRST_TURN, NEXT_TURN, IMAGE, OBJECT = 21, 10, 577, 576
MAX_LENGTH, BUCKETS, MAX_OBJECTS = 2048, (512, 1024, 2048), 4
SPEC = ExampleSpec(image_size=1, image_tokens=576, object_tokens=576, max_length=MAX_LENGTH,
                   max_objects=MAX_OBJECTS)
# Per-host batch of one 8-GPU host (configs: 32 per device, stage 3: 16).
HOST_BATCH = {"stage1": 256, "stage2": 256, "stage3": 128}


def _lognormal(rng, median: float, sigma: float) -> int:
    return max(1, int(round(median * np.exp(sigma * rng.standard_normal()))))


def _example(rng, kind: str) -> tuple[int, int, int]:
    """(tokens, images, objects) of one example of a source kind."""
    images, objects, turns = 1, 0, 1
    if kind == "pretrain":
        text = 8 + _lognormal(rng, 15, 0.35)
    elif kind == "rec":
        text = 22 + _lognormal(rng, 8, 0.5) + 24
    elif kind == "image_box":
        objects, text = 1, _lognormal(rng, 60, 0.5)
    elif kind == "text_image":
        text = _lognormal(rng, 80, 0.5)
    elif kind == "mix665k":
        if rng.random() < 0.06:
            images, text = 0, _lognormal(rng, 700, 0.7)
        else:
            turns = int(np.clip(rng.geometric(1 / 3), 1, 10))
            text = _lognormal(rng, 150, 0.8)
    elif kind == "sharegpt4v":
        text = _lognormal(rng, 230, 0.3)
    elif kind == "grounding_conversations":
        objects, text = int(rng.integers(1, 4)), _lognormal(rng, 150, 0.6)
    elif kind == "grounding_descriptions":
        objects, text = int(rng.integers(1, 3)), _lognormal(rng, 120, 0.5)
    else:
        raise ValueError(kind)
    tokens = SYSTEM_AND_FIRST_TURN + NEXT_TURN * (turns - 1) + IMAGE * images + OBJECT * objects + text
    return min(tokens, MAX_LENGTH), images, objects  # the template drops turns past max_length


STAGES = {
    "stage1": {"pretrain": 1.0},
    "stage2": {"rec": 4_100_000, "image_box": 210_000, "text_image": 46_000},
    "stage3": {"mix665k": 665_000, "sharegpt4v": 102_000, "grounding_conversations": 40_000,
               "grounding_descriptions": 32_000},
}


def sample(stage: str, n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    kinds, weights = zip(*STAGES[stage].items())
    p = np.asarray(weights, float) / sum(weights)
    return [_example(rng, kinds[i]) for i in rng.choice(len(kinds), size=n, p=p)]


def padded(examples, batch: int) -> dict:
    """pad_batch's layout: [batch, bucket of the longest] tokens, 1 image + MAX_OBJECTS object
    slots per example."""
    slots = real = image_slots = images_real = 0
    for i in range(0, len(examples) - batch + 1, batch):
        chunk = examples[i:i + batch]
        t = bucket_length(max(e[0] for e in chunk), BUCKETS)
        slots += batch * t
        real += sum(e[0] for e in chunk)
        image_slots += batch * (1 + MAX_OBJECTS)
        images_real += sum(e[1] + e[2] for e in chunk)
    return {"pad": 1 - real / slots, "visual_fill": images_real / image_slots, "rows": slots / MAX_LENGTH}


def packed(examples) -> dict:
    """Rows from packing.pack over the same stream."""
    spec = packing.default_packing_spec(SPEC)
    pixel = np.zeros((1, 1, 1, 3), np.uint8)
    stream = [{"input_ids": np.zeros(t, np.int32), "loss_mask": np.zeros(t, bool),
               "images": np.zeros((1, 1, 1, 3), np.uint8), "objects": np.repeat(pixel, MAX_OBJECTS, 0),
               "num_images": np.int32(i), "num_objects": np.int32(o)} for t, i, o in examples]
    ds = packing.pack(grain.MapDataset.source(stream).to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)), spec, pad_id=0)
    rows = list(ds)
    real = sum(int(np.sum(r["segment_ids"] > 0)) for r in rows)
    visual = sum(int(r["num_images"]) + int(r["num_objects"]) for r in rows)
    return {"pad": 1 - real / (len(rows) * MAX_LENGTH),
            "visual_fill": visual / (len(rows) * (spec.max_images + spec.max_objects)),
            "rows": len(rows), "spec": spec}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=20000)
    args = p.parse_args()
    print(f"examples per stage={args.examples}, buckets={BUCKETS}, packed rows of {MAX_LENGTH} tokens")
    for stage in STAGES:
        ex = sample(stage, args.examples)
        ex = ex[: len(ex) // HOST_BATCH[stage] * HOST_BATCH[stage]]  # whole host batches on both sides
        lengths = np.asarray([e[0] for e in ex])
        pad, pk = padded(ex, HOST_BATCH[stage]), packed(ex)
        print(f"{stage}: tokens/example mean {lengths.mean():.0f} median {np.median(lengths):.0f} "
              f"p95 {np.percentile(lengths, 95):.0f}; host batch {HOST_BATCH[stage]}")
        print(f"  padded   {100 * pad['pad']:5.1f}% padding, visual slots {100 * pad['visual_fill']:5.1f}% "
              f"filled, {pad['rows']:.0f} rows-of-2048 of compute")
        print(f"  packed   {100 * pk['pad']:5.1f}% padding, visual slots {100 * pk['visual_fill']:5.1f}% "
              f"filled, {pk['rows']} rows ({pk['spec'].max_images} image + {pk['spec'].max_objects} "
              f"object slots each)")
        print(f"  ratio (padded / packed token slots) {pad['rows'] / pk['rows']:.2f}x")


if __name__ == "__main__":
    main()
