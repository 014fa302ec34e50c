"""After training the tiny model (config.final_eval.fn of the tiny configs): score the held-out
split against baselines computed by the same evaluator on the same records, measure per task how
much the answers rely on the global image (loss with the own image vs another record's), and
leave pictures (boxes, training curves).

Writes WORKDIR/eval/metrics.json, WORKDIR/eval/examples/*.png and WORKDIR/eval/training_curves.png.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging
from flax import nnx

from tgg_jax.data import pipeline
from tgg_jax.evals import shapes as shapes_eval
from tgg_jax.evals.rec import predicted_pixel_box
from tgg_jax.inference import answer, prompt_inputs
from tgg_jax.models.tgg import TinyGroundingGPT
from tgg_jax.train.optimizer import trainable_filter
from tgg_jax.train.trainer import compiled_steps, held_out_loss
from tgg_jax.visualize import draw_boxes, plot_history


def load_records(dataset: str, split: str, data_dir: str, limit: int) -> list[dict]:
    """Single-turn eval records as plain dicts (question, answer, boxes, image bytes)."""
    source = pipeline.open_source(dataset, split, data_dir)
    n = len(source) if not limit else min(limit, len(source))
    records = []
    for i in range(n):
        r = source[i]
        conv = pipeline.conversations_of(r)
        records.append({"id": pipeline._text(r["id"]), "image": bytes(r["image"]),
                        "width": int(r["width"]), "height": int(r["height"]),
                        "objects": np.asarray(r["objects"], np.float32).reshape(-1, 4),
                        "task": pipeline._text(r["task"]), "question": conv[0]["value"],
                        "answer": conv[1]["value"], "gt_box": np.asarray(r["gt_box"], np.float32)})
    return records


def predict(model, records, tokenizer, spec, config) -> list[str]:
    items = [prompt_inputs([{"from": "human", "value": r["question"]}], r["image"], r["objects"],
                           tokenizer, spec, r["id"]) for r in records]
    length = max(len(it["prompt"]) for it in items)
    return answer(model, items, tokenizer, max_new_tokens=config.final_eval.max_new_tokens,
                  batch_size=config.final_eval.batch_size, length=length)


def evaluate_run(run) -> dict:
    """The final evaluation of a finished run (nothing when config.final_eval.enabled is off)."""
    config = run.config
    fe = config.final_eval
    if not fe.enabled:
        return {}
    data_dir = os.path.expanduser(config.data.data_dir)
    records = load_records(fe.dataset, fe.split, data_dir, fe.examples)
    trained = nnx.merge(run.graphdef, run.state.trainable, run.state.frozen)
    untrained = TinyGroundingGPT(run.model_config, rngs=nnx.Rngs(config.seed))
    _, eval_step = compiled_steps(run)

    def heldout(model) -> float:
        return held_out_loss(run, eval_step, fe.dataset, fe.split, fe.examples,
                             state=_as_train_state(run, model), batch_size=fe.batch_size)

    with jax.set_mesh(run.mesh):
        results = {}
        answers = {}
        for name, model in (("trained", trained), ("untrained", untrained)):
            logging.info("final eval: generating %d answers with the %s model", len(records), name)
            answers[name] = predict(model, records, run.tokenizer, run.example_spec, config)
            results[name] = {**shapes_eval.score(records, answers[name]), "heldout_loss": heldout(model)}
        results["trained"].update(image_reliance(run, eval_step, _as_train_state(run, trained), records,
                                                 fe.batch_size))
    results["constant_baseline"] = shapes_eval.score(records, shapes_eval.baseline_answers(records))
    out_dir = os.path.join(run.workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump({"split": f"{fe.dataset}/{fe.split}", "examples": len(records), **results}, f, indent=1)
        print_table(results)
        _draw_examples(records, answers["trained"], os.path.join(out_dir, "examples"), fe.images_to_draw)
        plot_history(os.path.join(run.workdir, "history.jsonl"), os.path.join(out_dir, "training_curves.png"))
    return results


def swap_images(examples: list[dict]) -> list[dict]:
    """The same examples, each with the global image of the next one (cyclically); object
    crops stay with their own example."""
    images = [e["images"] for e in examples]
    return [{**e, "images": images[(i + 1) % len(images)]} for i, e in enumerate(examples)]


def image_reliance(run, eval_step, state, records: list[dict], batch_size: int) -> dict:
    """Per task, the answer loss with each record's own image and with another record's
    (`loss/TASK`, `loss_swapped_image/TASK`). Equal losses mean the answers do not read the
    global image at all: the first thing to check when a task stays at chance."""
    by_task: dict[str, list[dict]] = {}
    for r in records:
        turns = [{"from": "human", "value": r["question"]}, {"from": "gpt", "value": r["answer"]}]
        spec_record = {**{k: r[k] for k in ("id", "image", "width", "height", "objects")}, "conversations": turns}
        by_task.setdefault(r["task"], []).append(
            pipeline.encode_example(spec_record, run.tokenizer, run.example_spec))

    pad_id = run.tokenizer.endoftext_id
    filler = pipeline._empty_example(run.example_spec, pad_id)  # as make_eval_batches fills its batches

    def mean_loss(examples: list[dict]) -> float:
        total = count = 0.0
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            chunk = chunk + [filler] * (batch_size - len(chunk))  # one compiled batch shape
            batch = pipeline.pad_batch(chunk, tuple(run.config.data.buckets), pad_id)
            s, c = eval_step(state, pipeline.to_global(batch, run.mesh))
            total, count = total + float(s), count + float(c)
        return total / max(count, 1.0)

    out = {}
    for task, examples in sorted(by_task.items()):
        if len(examples) > 1:
            out[f"loss/{task}"] = mean_loss(examples)
            out[f"loss_swapped_image/{task}"] = mean_loss(swap_images(examples))
    return out


def _as_train_state(run, model):
    """A TrainState-shaped view of `model`'s parameters for the shared eval step."""
    _, trainable, frozen = nnx.split(model, trainable_filter(tuple(run.config.trainable)), ...)
    return run.state.replace(trainable=trainable, frozen=frozen)


def print_table(results: dict) -> None:
    keys = sorted({k for v in results.values() for k in v})
    cols = list(results)
    print(f"{'metric':30s}" + "".join(f"{c:>20s}" for c in cols))
    for k in keys:
        print(f"{k:30s}" + "".join(f"{results[c].get(k, float('nan')):20.4f}" for c in cols))


def _draw_examples(records, answers, out_dir: str, count: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    box_records = [(r, a) for r, a in zip(records, answers) if r["task"] == "rec"][:count]
    for r, a in box_records:
        pred = predicted_pixel_box(a, r["width"], r["height"])
        draw_boxes(r["image"], true_box=r["gt_box"], pred_box=pred,
                   title=f"{r['question']}\n-> {a}", path=os.path.join(out_dir, f"{r['id']}.png"))
