"""The memory plan of docs/training.md: `tgg-train --compile_only` for each size x stage on a target mesh,
collected as JSON lines and printed as a markdown table.

    pip install 'libtpu==0.0.42.*'     # the TPU compiler; no TPU needed (ahead-of-time compile)
    python launch/memory_plan.py --target v5p-32 --out plan.jsonl      # compiles (minutes each)
    pip install -e '.[gpu-plan]'       # the CUDA plugin + compiler wheels; no GPU needed
    JAX_PLATFORMS=cpu python launch/memory_plan.py --target 8xh100 --out plan.jsonl
    python launch/memory_plan.py --table plan.jsonl                    # prints the table

Each compile runs in its own process (one JAX backend per topology). A row that is already in
--out is not compiled again, so an interrupted plan resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {
    # name: (--topology, HBM GiB per device, --target_config for GPUs)
    "v5p-32": ("tpu:v5p:2x2x4", 95.0, ""),    # 16 chips, 4 hosts
    "v5p-16": ("tpu:v5p:2x2x2", 95.0, ""),    # 8 chips: the 8-way mesh of an 8-GPU node
    # one node of 8 H100 SXM 80 GB (84942979072 bytes each, as the target config says)
    "8xh100": ("cuda:1x1x8", 79.1, os.path.join(HERE, "gpu_targets", "h100_sxm.txtpb")),
}
STAGES = ("stage1_pretrain", "stage2", "stage3")  # stage1_finetune has stage2's shape (LLM + projector, 12 packed rows a GPU)
SIZES = ("1.5b", "3b", "7b")


def compile_row(target: str, stage: str, size: str, overrides: list[str]) -> dict:
    topology, _, target_config = TARGETS[target]
    cmd = [sys.executable, "-m", "tgg_jax.train.main", f"--config=configs/{stage}.py:{size}",
           "--compile_only", f"--topology={topology}", *(f"--config.{o}" for o in overrides)]
    if target_config:
        cmd.append(f"--target_config={target_config}")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    out = proc.stdout
    start = out.find("{")
    if proc.returncode or start < 0:
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        return {"target": target, "stage": stage, "size": size, "overrides": overrides,
                "error": f"exit {proc.returncode}: {tail}"}
    report = json.loads(out[start:])
    return {"target": target, "stage": stage, "size": size, "overrides": overrides, **report}


def _key(row: dict) -> tuple:
    return row["target"], row["stage"], row["size"], tuple(row["overrides"])


def table(rows: list[dict]) -> str:
    rows = list({_key(r): r for r in rows}.values())  # a row compiled again replaces the earlier one
    lines = ["| target | size | stage | trainable | global batch (per device x accum) | remat | "
             "state + batch / device | peak / device | fits (< 90 % of HBM) |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(SIZES + STAGES)}
    rows = sorted(rows, key=lambda r: (r["target"], order.get(r["size"], 99), order.get(r["stage"], 99),
                                       r.get("grad_accum_steps", 1)))
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['size']} | {r['stage']} | | | | | compile failed | |")
            continue
        hbm = TARGETS[r["target"]][1]
        per_device = r["global_batch"] // (r["mesh"]["data"] * r["mesh"]["fsdp"])
        accum = r.get("grad_accum_steps", 1)
        trainable = "projector" if r["trainable"] == ["projector\\..*"] else "LLM + projector"
        lines.append(
            f"| {r['target']} | {r['size']} | {r['stage']} | {trainable} | {r['global_batch']} "
            f"({per_device // accum} x {accum}) | {r['remat_policy']} | {r['argument_gib']:.1f} GiB | "
            f"{r['peak_per_device_gib']:.1f} GiB | {'yes' if r['peak_per_device_gib'] < 0.9 * hbm else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=sorted(TARGETS), default="v5p-32")
    p.add_argument("--stages", nargs="*", default=list(STAGES))
    p.add_argument("--sizes", nargs="*", default=list(SIZES))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every row, e.g. grad_accum_steps=2 (-> --config.grad_accum_steps=2)")
    p.add_argument("--out", default="memory_plan.jsonl")
    p.add_argument("--table", metavar="JSONL", help="print the table of an existing plan and exit")
    args = p.parse_args()
    if args.table:
        print(table([json.loads(line) for line in open(args.table)]))
        return
    done = set()
    if os.path.isfile(args.out):
        done = {_key(r) for r in map(json.loads, open(args.out)) if "error" not in r}  # failed rows: again
    for size in args.sizes:
        for stage in args.stages:
            key = (args.target, stage, size, tuple(args.set))
            if key in done:
                continue
            print(f"[memory_plan] compiling {stage}:{size} for {args.target} ...", flush=True)
            row = compile_row(args.target, stage, size, list(args.set))
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            result = row["error"] if "error" in row else f"{row['peak_per_device_gib']} GiB peak per device"
            print(f"[memory_plan] {stage}:{size}: {result}", flush=True)


if __name__ == "__main__":
    main()
