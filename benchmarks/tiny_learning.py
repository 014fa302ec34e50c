"""How fast the tiny model learns grounding on CPU: REC Acc@0.5 on held-out tgg_shapes records
against training wall time, written to a JSON file and a plot.

    python benchmarks/tiny_learning.py --config configs/tiny_long.py --workdir runs/tiny_learning

The run is an ordinary training run (it resumes); every --eval_every steps training pauses, the
model answers --examples REC questions of the validation split by greedy generation, and the
point (training seconds, step, acc@0.5, mean IoU) is appended. Evaluation time is not counted
as training time; a stage 0 (config.tower_align) is, so the first point sits after it. At the end the run gets the main command's final evaluation (DIR/eval/).
Chance for a constant box is about 2 % (tgg_jax/data/shapes.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny_long.py")
    p.add_argument("--workdir", default="runs/tiny_learning")
    p.add_argument("--eval_every", type=int, default=250)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=python_value")
    args = p.parse_args()

    import ast
    import importlib.util

    import numpy as np
    from flax import nnx

    from tgg_jax.evals import shapes as shapes_eval
    from tgg_jax.tiny import tower_align
    from tgg_jax.tiny.final_eval import evaluate_run, load_records, predict
    from tgg_jax.train import trainer

    spec = importlib.util.spec_from_file_location("tiny_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update_from_flattened_dict({key: ast.literal_eval(value)
                                       for key, value in (item.split("=", 1) for item in args.set)})
    from tgg_jax import distributed
    distributed.use_cpu_devices(config.cpu_devices)  # as tgg-train does

    run = trainer.setup(config, args.workdir)
    data_dir = os.path.expanduser(config.data.data_dir)
    dataset = config.final_eval.dataset
    validation = load_records(dataset, "validation", data_dir, 0)
    # REC is the target; yes/no (balanced: 0.5 is chance) is where the tiny model learns first.
    records = ([r for r in validation if r["task"] == "rec"][: args.examples]
               + [r for r in validation if r["task"] == "yesno"][: args.examples])
    curve_file = os.path.join(run.workdir, "tiny_learning.jsonl")
    points = [json.loads(line) for line in open(curve_file)] if os.path.isfile(curve_file) else []
    # A stage 0 (config.tower_align) counts as training time: the curve starts after it.
    report = os.path.join(run.workdir, tower_align.ALIGNED_DIR, tower_align.REPORT_FILE)
    stage0_seconds = json.load(open(report))["seconds"] if os.path.isfile(report) else 0.0
    trained_seconds = points[-1]["train_seconds"] if points else stage0_seconds

    def evaluate():
        model = nnx.merge(run.graphdef, run.state.trainable, run.state.frozen)
        answers = predict(model, records, run.tokenizer, run.example_spec, config)
        m = shapes_eval.score(records, answers)
        point = {"step": int(run.state.step), "train_seconds": trained_seconds,
                 "rec_acc@0.5": m["rec/acc@0.5"], "rec_mean_iou": m["rec/mean_iou"],
                 "yesno_accuracy": m["yesno/accuracy"]}
        with open(curve_file, "a") as f:
            f.write(json.dumps(point) + "\n")
        points.append(point)
        print(f"[tiny_learning] step {point['step']} train {trained_seconds / 60:.1f} min "
              f"REC acc@0.5 {point['rec_acc@0.5']:.3f} mIoU {point['rec_mean_iou']:.3f} "
              f"yes/no {point['yesno_accuracy']:.3f}", flush=True)

    if not points:
        evaluate()
    while int(run.state.step) < run.total_steps:
        t0 = time.time()
        trainer.train(run, until_step=int(run.state.step) + args.eval_every)
        trained_seconds += time.time() - t0
        evaluate()
        if run.preempted:  # SIGTERM: the checkpoint is saved; re-running resumes the curve
            return

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    minutes = np.array([q["train_seconds"] for q in points]) / 60
    ax.plot(minutes, [q["rec_acc@0.5"] for q in points], "o-", label="REC acc@0.5")
    ax.plot(minutes, [q["rec_mean_iou"] for q in points], "s--", label="REC mean IoU")
    ax.plot(minutes, [q.get("yesno_accuracy", np.nan) for q in points], "^-", label="yes/no accuracy")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="training time on this machine (minutes)", ylabel="held-out tgg_shapes",
           title=f"{os.path.basename(args.config)}: {len(records)} REC and yes/no questions", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    out = os.path.join(run.workdir, "tiny_learning.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {curve_file} and {out}")
    if config.final_eval.enabled:  # the main command's evaluation: yes/no, baselines, pictures
        evaluate_run(run)


if __name__ == "__main__":
    main()
