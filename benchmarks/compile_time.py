"""Compile time of one train step with the layers scanned against the same step with its layers
one by one (`model.scan_layers`), ahead of time for a target mesh, and each step's peak memory.

    pip install -e '.[gpu-plan]'     # XLA:GPU compiler and CUDA plugin; no GPU needed
    JAX_PLATFORMS=cpu python benchmarks/compile_time.py --target 8xh100 --size 3b --stage stage3
    python benchmarks/compile_time.py --target host --size 1.5b --stage stage2 --depth 2:2

`--target host` compiles for this machine's devices; `--depth LLM:TOWER` compiles shallower
copies (the layers are identical, so per-layer costs carry over). The step is the stage config's
(packing and batch as shipped, init_from replaced by the preset's shapes). Each compile runs in
its own process, scanned first; the ratio printed is one by one / scanned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "launch")]

from memory_plan import TARGETS  # noqa: E402  (launch/ is a script folder)


def measure(target: str, size: str, stage: str, scan: bool, depth: str) -> dict:
    """One compile in this process: seconds to lower and to compile, peak bytes per device."""
    import importlib

    from tgg_jax.train.plan import compile_step, peak_bytes
    config = importlib.import_module(f"configs.{stage}").get_config(size)
    config.init_from = ""  # the preset's architecture, from shapes alone
    config.model.scan_layers = scan
    topology, target_config = ("", "") if target == "host" else (TARGETS[target][0], TARGETS[target][2])
    layers = tuple(int(n) for n in depth.split(":")) if depth else None
    step = compile_step(config, topology, target_config, depth=layers)
    model = step["model_config"]
    return {"scan_layers": scan, "lower_s": round(step["lower_s"], 1), "compile_s": round(step["compile_s"], 1),
            "peak_gib": round(peak_bytes(step["compiled"])["peak"] / 1024 ** 3, 2),
            "device_kind": step["devices"][0].device_kind, "devices": len(step["devices"]),
            "depth": [model.llm.num_layers, model.clip.num_layers], "batch": config.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="8xh100", choices=[*TARGETS, "host"])
    parser.add_argument("--size", default="3b")
    parser.add_argument("--stage", default="stage3")
    parser.add_argument("--depth", default="", help="LLM:TOWER layers (default: the preset's)")
    parser.add_argument("--measure", choices=["scan", "loop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.target, args.size, args.stage, args.measure == "scan", args.depth)))
        return
    rows = {}
    for mode in ("scan", "loop"):
        cmd = [sys.executable, os.path.abspath(__file__), "--target", args.target, "--size", args.size,
               "--stage", args.stage, "--depth", args.depth, "--measure", mode]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            sys.exit(f"compile ({mode}) failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows[mode] = json.loads(lines[-1])
        r = rows[mode]
        print(f"{'scanned layers' if mode == 'scan' else 'layers one by one'}: lower {r['lower_s']} s, "
              f"compile {r['compile_s']} s, peak {r['peak_gib']} GiB / device "
              f"({r['devices']} x {r['device_kind']}, depth {r['depth'][0]} + {r['depth'][1]})", flush=True)
    scan, loop = rows["scan"], rows["loop"]
    total = lambda r: r["lower_s"] + r["compile_s"]  # noqa: E731
    print(f"{args.size} {args.stage} on {args.target}: lower + compile {total(loop):.0f} s one by one, "
          f"{total(scan):.0f} s scanned: {total(loop) / total(scan):.2f}x faster to compile scanned; "
          f"peak {loop['peak_gib']} vs {scan['peak_gib']} GiB / device")


if __name__ == "__main__":
    main()
