"""What the rehearsal asserts once `launch/rehearse.sh` has run (exit code 1 and the first failure
otherwise):

- each stage changed exactly the parameters SPEC §3 trains (every trainable tensor moved, every
  frozen one bit-identical to where the stage started);
- each stage started from the previous stage's last checkpoint: its preflight line says so, its
  frozen tensors equal that checkpoint's bit for bit, and no trainable tensor moved further than
  AdamW can move it in the stage's steps (|update| <= ~lr per step; a tensor loaded from
  anywhere else differs by far more);
- every logged loss is finite;
- every eval wrote its results;
- the export loads in `transformers` and the tokenizer it carries holds the placeholders.

    python -m tests.rehearsal.check ROOT
"""

from __future__ import annotations

import glob
import importlib
import json
import math
import os
import sys

import numpy as np

from tgg_jax.checkpoint import load_params, resolve_checkpoint

# Stage -> (what it starts from, the parameter groups SPEC §3 trains in it).
STAGES = (
    ("stage1_pretrain", "checkpoints/tgg_0.5b_hf", ("projector",)),
    ("stage1_finetune", "runs/stage1_pretrain/checkpoints", ("projector", "llm")),
    ("stage2", "runs/stage1_finetune/checkpoints", ("projector", "llm")),
    ("stage3", "runs/stage2/checkpoints", ("projector", "llm")),
)
EVALS = ("rec_refcoco", "rec_refcoco+", "rec_refcocog", "pope", "vqav2_val", "gqa", "scienceqa",
         "mme", "mmbench_dev", "llava_bench")


def _flat(tree, prefix=""):
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat(value, name + ".")
        else:
            yield name, np.asarray(value)


def params(path: str) -> dict[str, np.ndarray]:
    tree, _ = load_params(resolve_checkpoint(path))
    return dict(_flat(tree))


def adam_reach(stage: str, steps: int) -> float:
    """How far AdamW can move a parameter in `steps` steps of the stage's peak rate: each
    bias-corrected step is at most ~lr (|m_hat| / sqrt(v_hat) <= ~1, weight decay 0); x 4 margin."""
    lr = importlib.import_module(f"configs.{stage}").get_config("0.5b").lr
    return 4 * steps * lr


def check_stage(root: str, stage: str, start: str, trains: tuple[str, ...]) -> list[str]:
    before, after = params(os.path.join(root, start)), params(
        os.path.join(root, "runs", stage, "checkpoints"))
    assert before.keys() == after.keys(), f"{stage}: parameter names changed"
    problems = []
    reach = adam_reach(stage, int(os.environ.get("STEPS", "3")))
    for name in sorted(after):
        same = np.array_equal(before[name], after[name])
        trainable = name.split(".")[0] in trains
        if trainable and same:
            problems.append(f"{stage}: trainable {name} did not change")
        moved = float(np.max(np.abs(after[name] - before[name])))
        if trainable and moved > reach:
            problems.append(f"{stage}: {name} moved {moved:.3g}, more than {reach:.3g}: it did not "
                            f"start from {start}")
        if not trainable and not same:
            problems.append(f"{stage}: frozen {name} changed")
    log = open(os.path.join(root, "logs", f"{stage}.log")).read()
    origin = resolve_checkpoint(os.path.join(root, start))
    if f"from {origin}" not in log:
        problems.append(f"{stage}: did not start from {origin}")
    losses = [json.loads(line).get("loss") for line in
              open(os.path.join(root, "runs", stage, "history.jsonl"))]
    losses = [x for x in losses if x is not None]
    if not losses or not all(math.isfinite(x) for x in losses):
        problems.append(f"{stage}: losses {losses}")
    return problems


def check_evals(root: str) -> list[str]:
    problems = []
    for name in EVALS:
        found = glob.glob(os.path.join(root, "eval", name, "*.json*"))
        if not found:
            problems.append(f"eval {name}: nothing written in {os.path.join(root, 'eval', name)}")
    return problems


def check_export(root: str) -> list[str]:
    import torch
    import transformers

    out = os.path.join(root, "export")
    llm = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, "llm"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(out, "llm"))
    transformers.CLIPVisionModel.from_pretrained(os.path.join(out, "clip"))
    transformers.Dinov2Model.from_pretrained(os.path.join(out, "dinov2"))
    problems = []
    if tokenizer.convert_tokens_to_ids(["<image>", "<object>"]) != [151665, 151666]:
        problems.append("export: tokenizer lost the placeholders")
    final = params(os.path.join(root, "runs/stage3/checkpoints"))
    embed = llm.get_input_embeddings().weight.detach().to(torch.float32).numpy()
    if not np.array_equal(embed, final["llm.embed_tokens.embedding"]):
        problems.append("export: the LLM's embeddings are not stage 3's")
    return problems


def main(root: str) -> int:
    problems = []
    for stage, start, trains in STAGES:
        problems += check_stage(root, stage, start, trains)
    problems += check_evals(root) + check_export(root)
    for line in problems:
        print(f"rehearsal check: {line}", file=sys.stderr)
    print("rehearsal check: " + ("FAILED" if problems else "every stage, eval and export as "
                                 "specified"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
