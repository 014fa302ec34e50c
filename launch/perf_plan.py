"""The performance plan of docs/performance.md: for each size x stage on a target, XLA's cost
analysis of the compiled train step (FLOPs, HBM bytes), its collective bytes, compile time and
peak memory, a roofline bound on the step time, the MFU ceiling that follows, and the time to
train the paper's 3-stage recipe on one 8xH100 node at that ceiling and at 50 % MFU.

    pip install -e '.[gpu-plan]' 'libtpu==0.0.42.*'    # XLA:GPU and XLA:TPU compilers; no accelerator
    JAX_PLATFORMS=cpu python launch/perf_plan.py --target 8xh100 --out perf.jsonl     # compiles
    JAX_PLATFORMS=cpu python launch/perf_plan.py --target v5p-32 --out perf.jsonl
    python launch/perf_plan.py --table perf.jsonl                                      # prints

Full-depth compiles of the layers one by one take 4-10 minutes each on 2 cores, so the plan
compiles shallow copies of each step (`plan.compile_step(depth=...)`): LLM layers 2 and 4 with
towers of 2 layers, plus towers of 4 layers for each target x stage. Every figure is then
extrapolated linearly per LLM layer and per tower layer to the preset's depth (the decoder and
tower layers are identical, so each adds the same HLO). `--check SIZE:STAGE:LLM:TOWER` compiles
one more depth to check the extrapolation against.

XLA's cost analysis counts a while loop's body once, so the plan compiles the layers one by one
(`model.scan_layers` off) and the vocabulary loss's chunk loop unrolled (the same computation);
benchmarks/compile_time.py gives the compile time and memory with the layers scanned, as they
train. The loops XLA:TPU makes itself (windowed einsums) and the kernels it cannot see into
(cuBLAS, cuDNN, Pallas splash) are priced from the module's text (hlo_costs.py) and added to its
count. Gradient accumulation is left at the recipe's 1.
Each compile runs in its own process; rows already in --out are not compiled again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]  # memory_plan beside this file; configs/ and tgg_jax at the root

from hlo_costs import Module, collective_bytes, fmha_costs, gemm_costs, splash_costs  # noqa: E402
from memory_plan import SIZES, STAGES, TARGETS  # noqa: E402  (launch/ is a script folder)

# Per device: dense bf16 FLOP/s, HBM bytes/s, interconnect bytes/s each way, and the sources.
HARDWARE = {
    "8xh100": dict(devices=8, flops=989e12, hbm=3.35e12, link=450e9,
                   source="NVIDIA H100 SXM5 datasheet: 989 TFLOP/s dense BF16, HBM3 3.35 TB/s, "
                          "NVLink 4 900 GB/s per GPU (450 GB/s each way)"),
    "v5p-32": dict(devices=16, flops=459e12, hbm=2.765e12, link=300e9,
                   source="Cloud TPU v5p system architecture: 459 TFLOP/s BF16, HBM 2,765 GB/s, "
                          "ICI 4,800 Gbps per chip (600 GB/s, taken as 300 GB/s each way)"),
    "v5p-16": dict(devices=8, flops=459e12, hbm=2.765e12, link=300e9, source="as v5p-32"),
}
SHALLOW = ((2, 2), (4, 2))   # (LLM layers, tower layers) compiled per row
TOWER_PROBE = (2, 4)         # one more per target x stage, for the per-tower-layer slope
# The paper's recipe in order: (config module, what it trains on), its stages' compiled shape.
RECIPE = (("stage1_pretrain", "stage1_pretrain"), ("stage1_finetune", "stage2"),
          ("stage2", "stage2"), ("stage3", "stage3"))
def roofline(flops: float, hbm_bytes: float, comm_bytes: float, hw: dict) -> dict[str, float]:
    """Per-device lower bound on the step time: the largest of compute, HBM traffic and
    interconnect traffic, each at the device's peak (perfect overlap)."""
    parts = {"compute_s": flops / hw["flops"], "hbm_s": hbm_bytes / hw["hbm"], "comm_s": comm_bytes / hw["link"]}
    bound = max(parts, key=parts.get)
    return {**parts, "step_s": parts[bound], "bound": bound.removesuffix("_s")}


def model_flops(size: str, stage: str, batch: int, seq_len: int, images_per_example: int) -> float:
    """The trainer's MFU numerator (metrics.train_flops_per_step) for one step of the recipe's shape."""
    from tgg_jax.models.tgg import PRESETS, count_params
    from tgg_jax.train.metrics import train_flops_per_step
    cfg = PRESETS[size]()
    return train_flops_per_step(count_params(cfg), batch * seq_len, batch * images_per_example, cfg.grid ** 2)


def extrapolate(points: dict[tuple[int, int], float], depth: tuple[int, int]) -> float:
    """f(L, V) = f(2, 2) + (L - 2) * per-LLM-layer + (V - 2) * per-tower-layer, from the
    shallow compiles (2, 2), (4, 2) and (2, 4)."""
    base = points[SHALLOW[0]]
    per_llm = (points[SHALLOW[1]] - base) / (SHALLOW[1][0] - SHALLOW[0][0])
    per_tower = (points[TOWER_PROBE] - base) / (TOWER_PROBE[1] - SHALLOW[0][1])
    return base + (depth[0] - SHALLOW[0][0]) * per_llm + (depth[1] - SHALLOW[0][1]) * per_tower


METRICS = ("flops", "xla_flops", "hbm_bytes", "comm_bytes", "peak_bytes", "compile_s")


def plan_row(target: str, size: str, stage: str, points: dict[tuple[int, int], dict],
             depth: tuple[int, int], batch: int, seq_len: int, images: int) -> dict:
    """One row of the plan from its shallow compiles (or a single full-depth compile keyed by `depth`)."""
    hw = HARDWARE[target]
    if depth in points:
        est = {k: points[depth][k] for k in METRICS}
    else:
        est = {k: extrapolate({d: p[k] for d, p in points.items()}, depth) for k in METRICS}
        # Neither is linear enough in depth to extrapolate, so the shallow compile's: compile time
        # on a shared host, and the peak, which follows XLA's schedule of the unrolled loss (the
        # memory plan compiles each step whole, as it trains).
        for k in ("compile_s", "peak_bytes"):
            est[k] = points[SHALLOW[0]][k]
    bound = roofline(est["flops"], est["hbm_bytes"], est["comm_bytes"], hw)
    useful = model_flops(size, stage, batch, seq_len, images)
    return {"target": target, "size": size, "stage": stage, "depth": list(depth), **est,
            "flops_over_model": est["flops"] * hw["devices"] / useful, "model_flops": useful, **bound,
            "mfu_ceiling": useful / (hw["devices"] * hw["flops"] * bound["step_s"])}


def time_to_paper(rows: dict[str, dict], target: str = "8xh100", mfu: float | None = None) -> float:
    """Seconds for the 4 training runs of the recipe (1a, 1b, 2, 3) with every step at the
    compiled shape: at the roofline bound of each stage (mfu None) or at a given MFU."""
    from tgg_jax.train.trainer import total_steps
    hw = HARDWARE[target]
    seconds = 0.0
    for config_name, shape in RECIPE:
        row = rows[shape]
        steps = total_steps(_config(config_name, row["size"]))
        per_step = row["step_s"] if mfu is None else row["model_flops"] / (hw["devices"] * hw["flops"] * mfu)
        seconds += steps * per_step
    return seconds


# SPEC §3's global batches. The plan prices them unpacked, every sequence a full 2048-token row
# (what perf_plan_8xh100.jsonl and perf_plan_v5p32.jsonl hold): an upper bound, as the packed stage configs
# carry ~3 / 3 / 2.8 / 1.75 examples a row and so need that many times fewer rows.
SPEC_BATCH = {"stage1_pretrain": 256, "stage1_finetune": 256, "stage2": 256, "stage3": 128}


def _config(stage: str, size: str):
    import importlib
    config = importlib.import_module(f"configs.{stage}").get_config(size)
    config.data.packing = False
    config.data.examples_per_row = 1.0
    config.batch_size = SPEC_BATCH[stage]
    return config


# --- one compile (runs in its own process) --------------------------------------------------


def _unrolled_map(f, xs, *, batch_size=None):
    """jax.lax.map without a while loop (XLA's cost analysis counts a loop body once)."""
    import jax
    if batch_size is not None:
        raise ValueError("the performance plan unrolls lax.map without batch_size")
    return jax.lax.scan(lambda carry, x: (carry, f(x)), None, xs, unroll=True)[1]


def measure(target: str, size: str, stage: str, depth: tuple[int, int]) -> dict:
    """Compile one step at `depth` for `target` and read its costs."""
    import jax
    jax.lax.map = _unrolled_map
    from tgg_jax.train.plan import compile_step, peak_bytes
    topology, _, target_config = TARGETS[target]
    config = _config(stage, size)
    config.init_from = ""  # the preset's architecture, from shapes alone
    config.model.scan_layers = False  # a scan's body would be counted once, as any loop's
    step = compile_step(config, topology, target_config, depth=depth)
    compiled = step["compiled"]
    text = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost is None:  # XLA:GPU gives no cost analysis ahead of time: XLA's HloCostAnalysis of
        # the optimised GPU module, run by the CPU client
        from jax._src.lib import xla_client
        module = compiled.runtime_executable().hlo_modules()[0]
        cost = dict(xla_client._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module))
    # What XLA leaves out: library and Pallas kernels, and loop bodies' runs after the first.
    module = Module(text)
    if module.unpriced_loops:
        raise RuntimeError(f"loops with no readable trip count: {module.unpriced_loops[:3]}")
    kernels = [gemm_costs(module), fmha_costs(module), splash_costs(module)]
    kernel_flops, kernel_bytes = (sum(k[i] for k in kernels) for i in (0, 1))
    loop_flops, loop_bytes = module.loop_extra()
    comm = collective_bytes(module, len(step["devices"]))
    return {"target": target, "size": size, "stage": stage, "depth": list(depth),
            "device_kind": step["devices"][0].device_kind, "devices": len(step["devices"]),
            "batch": config.batch_size, "seq_len": max(config.data.buckets),
            "images": 1 + config.data.max_objects,
            "flops": float(cost["flops"]) + kernel_flops + loop_flops,
            "hbm_bytes": float(cost["bytes accessed"]) + kernel_bytes + loop_bytes,
            "xla_flops": float(cost["flops"]), "kernel_flops": kernel_flops, "loop_flops": loop_flops,
            "loop_bytes": loop_bytes,
            "comm_bytes": sum(comm.values()), "comm": comm, "peak_bytes": peak_bytes(compiled)["peak"],
            "lower_s": step["lower_s"], "compile_s": step["compile_s"] + step["lower_s"],
            "cudnn_fmha": text.count("__cudnn$fmha"), "splash": text.count("splash"),
            "windowed_einsum_loops": sum("windowed_dot_general" in body for body in module.loop_bodies)}


def _measure_in_subprocess(target: str, size: str, stage: str, depth: tuple[int, int]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", f"{target}:{size}:{stage}:{depth[0]}:{depth[1]}"]
    proc = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        return {"target": target, "size": size, "stage": stage, "depth": list(depth),
                "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


# --- the plan -------------------------------------------------------------------------------


def full_depth(size: str) -> tuple[int, int]:
    from tgg_jax.models.tgg import PRESETS
    cfg = PRESETS[size]()
    return cfg.llm.num_layers, cfg.clip.num_layers


def build_rows(measured: list[dict]) -> list[dict]:
    """Plan rows (full depth, extrapolated where needed) from measured compiles."""
    by = {}
    for m in measured:
        if "error" not in m:
            by.setdefault((m["target"], m["size"], m["stage"]), {})[tuple(m["depth"])] = m
    rows = []
    for (target, size, stage), points in sorted(by.items()):
        depth = full_depth(size)
        if TOWER_PROBE not in points:  # the tower slope is measured once per target x stage
            probe = by.get((target, SIZES[0], stage), {})
            if TOWER_PROBE in probe and SHALLOW[0] in probe:
                points = {**points, TOWER_PROBE: {k: points[SHALLOW[0]][k] + probe[TOWER_PROBE][k]
                                                  - probe[SHALLOW[0]][k] for k in METRICS}}
        if depth not in points and not all(d in points for d in (*SHALLOW, TOWER_PROBE)):
            continue
        any_point = next(iter(points.values()))
        rows.append({**plan_row(target, size, stage, points, depth, any_point["batch"],
                                any_point["seq_len"], any_point["images"]),
                     "method": "compiled" if depth in points else "extrapolated"})
    return rows


def table(rows: list[dict]) -> str:
    gib = 1024 ** 3
    lines = ["| target | size | stage | step FLOPs / model FLOPs | collectives / device | compile (2+2 layers) | "
             "peak / device (2+2 layers) | roofline step (compute, HBM, comm) | bound | MFU ceiling |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(SIZES + STAGES)}
    for r in sorted(rows, key=lambda r: (r["target"], order[r["size"]], order[r["stage"]], r["method"])):
        mark = "" if r["method"] == "extrapolated" else " (full depth)"
        lines.append(
            f"| {r['target']} | {r['size']} | {r['stage']}{mark} | {r['flops_over_model']:.2f} | "
            f"{r['comm_bytes'] / gib:.1f} GiB | {r['compile_s']:.0f} s | {r['peak_bytes'] / gib:.1f} GiB | "
            f"{r['step_s']:.2f} s ({r['compute_s']:.2f}, {r['hbm_s']:.2f}, {r['comm_s']:.2f}) | {r['bound']} | "
            f"{100 * r['mfu_ceiling']:.0f} % |")
    return "\n".join(lines)


def paper_table(rows: list[dict], target: str = "8xh100") -> str:
    lines = ["| size | at the roofline ceiling | at 50 % MFU |", "|---|---|---|"]
    for size in SIZES:
        shapes = {r["stage"]: r for r in rows if r["target"] == target and r["size"] == size
                  and r["method"] == "extrapolated"}
        if set(shapes) != set(STAGES):
            continue
        lines.append(f"| {size} | {time_to_paper(shapes, target) / 3600:.1f} h | "
                     f"{time_to_paper(shapes, target, mfu=0.5) / 3600:.1f} h |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=sorted(TARGETS), default="8xh100")
    p.add_argument("--stages", nargs="*", default=list(STAGES))
    p.add_argument("--sizes", nargs="*", default=list(SIZES))
    p.add_argument("--check", nargs="*", default=[], metavar="SIZE:STAGE:LLM:TOWER",
                   help="also compile these rows at this depth (checks the extrapolation; the preset's "
                        "full depth gives a compiled row)")
    p.add_argument("--out", default="perf_plan.jsonl")
    p.add_argument("--table", metavar="JSONL", help="print the tables of an existing plan and exit")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # TARGET:SIZE:STAGE:LLM:TOWER, one compile
    args = p.parse_args()
    if args.measure:
        target, size, stage, llm, tower = args.measure.split(":")
        print(json.dumps(measure(target, size, stage, (int(llm), int(tower)))), flush=True)
        return
    if args.table:
        rows = build_rows([json.loads(line) for line in open(args.table)])
        print(table(rows))
        for target in sorted({r["target"] for r in rows}):
            print(f"\ntime to the paper on one {target}:\n" + paper_table(rows, target))
        return
    done = set()
    if os.path.isfile(args.out):
        done = {(m["target"], m["size"], m["stage"], tuple(m["depth"])) for m in map(json.loads, open(args.out))
                if "error" not in m}  # failed compiles run again
    todo = [(size, stage, d) for size in args.sizes for stage in args.stages for d in SHALLOW]
    todo += [(SIZES[0], stage, TOWER_PROBE) for stage in args.stages]
    for item in args.check:
        size, stage, llm, tower = item.split(":")
        todo.append((size, stage, (int(llm), int(tower))))
    for i, (size, stage, depth) in enumerate(todo):
        if (args.target, size, stage, depth) in done:
            continue
        print(f"[perf_plan] {i + 1}/{len(todo)} compiling {stage}:{size} at depth {depth} for {args.target} ...",
              flush=True)
        row = _measure_in_subprocess(args.target, size, stage, depth)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        done_line = row.get("error") or "%.0f s, %.3e FLOPs/device" % (row["compile_s"], row["flops"])
        print(f"[perf_plan] {done_line}", flush=True)


if __name__ == "__main__":
    main()
