"""The prepared accelerator check (benchmarks/gpu_check.sh runs it): on one GPU, in ~8 minutes,

  train   a stage-3-shaped training step of the 1.5B and 3B presets (bf16 compute, fp32 master
          weights, full remat, rows of 2048 tokens holding one 576-token image and one 576-token
          object crop, towers frozen, projector + LLM trained with AdamW and global-norm
          clipping): tgg-jax's jitted step (tgg_jax.train.step) against the same model in
          PyTorch (the HF parts in tgg_jax.torch, sdpa attention, bf16 autocast over fp32
          weights, gradient checkpointing, fused AdamW) on the same batch shapes; MFU of both
          (model FLOPs: 6·N per LLM token plus the towers' forward, train.metrics) and the ratio.
  decode  tgg_jax.generate of the bare LLM (bf16 weights) at batch 1 and 32 against the HBM
          roofline: every decode step reads all weights once and the KV cache written so far.

    python benchmarks/gpu_check.py all [--out DIR] [--layers 12] [--dry-run]
    python benchmarks/gpu_check.py train --framework jax|torch --size 1.5b|3b [...]
    python benchmarks/gpu_check.py decode --batch 32 [...]

`all` runs each part in its own process (JAX and PyTorch each hold GPU memory until they exit),
appends one JSON line per part to DIR/gpu_check.jsonl and prints the summary. `--layers N`
keeps N decoder layers (0: the preset's depth): memory grows with depth (PyTorch's step holds
every layer's fp32 weights, gradients and AdamW state too) and MFU barely depends on it; the
towers, embedding and LM head stay full size. The JAX model scans its layers, as the presets do. `--dry-run` runs the same code
on the CPU with tiny shapes, in this process, in seconds (what CI tests).

Imports only jax, flax, optax, numpy, torch, transformers, safetensors and PIL (the GPU image's
preinstalled packages) besides tgg_jax itself: no ml_collections, grain or tensorflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

# HBM bandwidth per device kind (vendor figures, bytes/s) for the decode roofline.
HBM_BANDWIDTH = {"H100 PCIe": 2.0e12, "H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "GH200": 4.0e12}
SEQ = 2048
# Per-size batch: what the PyTorch step fits in 80 GB with fp32 logits over 151936 words.
TRAIN_BATCH = {"1.5b": 8, "3b": 4, "tiny": 2}
DECODE_PROMPT, DECODE_NEW = 128, 256


def model_config(size: str, layers: int, dtype: str = "bfloat16", remat: str = "full"):
    """TGGConfig of a preset (or the test-sized "tiny") with `layers` decoder layers (0: all)."""
    from tgg_jax.models import clip, dinov2, qwen2
    from tgg_jax.models.tgg import PRESETS, TGGConfig, with_dtype
    if size == "tiny":
        # Scanned layers, as the presets: the dry run takes the code path the GPU run takes.
        config = TGGConfig(llm=qwen2.tiny(vocab_size=512, scan_layers=True),
                           clip=clip.tiny(image_size=28, scan_layers=True), dinov2=dinov2.tiny(scan_layers=True),
                           image_token_id=510, object_token_id=511)
    else:
        config = PRESETS[size]()
    llm = dataclasses.replace(config.llm, remat_policy=remat,
                              num_layers=layers or config.llm.num_layers)
    return with_dtype(config.replace(llm=llm), dtype)


def train_batch(config, batch: int, seq: int, seed: int = 0) -> dict:
    """Rows of `seq` tokens: text, one <image> run, text, one <object> run, text; one segment."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, min(config.image_token_id, config.object_token_id), (batch, seq)).astype(np.int32)
    ids[:, 8:8 + config.image_tokens] = config.image_token_id
    start = 16 + config.image_tokens
    ids[:, start:start + config.object_tokens] = config.object_token_id
    s = config.image_size
    return {"input_ids": ids, "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
            "segment_ids": np.ones_like(ids), "targets": np.roll(ids, -1, axis=1),
            "target_mask": np.ones_like(ids, bool),
            "images": rng.integers(0, 256, (batch, 1, s, s, 3)).astype(np.uint8),
            "objects": rng.integers(0, 256, (batch, 1, s, s, 3)).astype(np.uint8)}


def model_flops(config, batch: int, seq: int) -> float:
    from tgg_jax.models.tgg import count_params
    from tgg_jax.train.metrics import train_flops_per_step
    return train_flops_per_step(count_params(config), batch * seq, 2 * batch, config.grid ** 2)


def timed(fn, steps: int, warmup: int = 2) -> tuple[float, float]:
    """(seconds of the first call, compile included; median seconds of the next `steps`)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


# --- train --------------------------------------------------------------------------------------

HYPER = dict(lr=2e-5, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0,
             warmup_ratio=0.03, decay_ratio=1.0, total_steps=1000)  # configs/common.py's values
TRAINABLE = ("projector\\..*", "llm\\..*")


def train_jax(config, batch: dict, steps: int) -> dict:
    import types

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tgg_jax.models.tgg import TinyGroundingGPT
    from tgg_jax.train import optimizer as opt_lib
    from tgg_jax.train.step import TrainState, make_train_step

    hyper = types.SimpleNamespace(**HYPER)
    model = TinyGroundingGPT(config, rngs=nnx.Rngs(0))
    optimizer = opt_lib.make_optimizer(hyper)
    graphdef, trainable, frozen = nnx.split(model, opt_lib.trainable_filter(TRAINABLE), ...)
    del model
    state = TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen,
                       opt_state=optimizer.init(trainable))
    step = jax.jit(make_train_step(graphdef, optimizer, opt_lib.learning_rate_schedule(hyper),
                                   loss_chunk=512), donate_argnums=0)
    device_batch = jax.device_put(batch)
    t0 = time.perf_counter()
    compiled = step.lower(state, device_batch).compile()
    compile_s = time.perf_counter() - t0
    hlo = compiled.as_text()
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], device_batch)
        holder["loss"] = float(metrics["loss"])  # waits for the step

    first, seconds = timed(run, steps)
    return {"seconds": seconds, "first_call_s": first, "compile_s": compile_s, "loss": holder["loss"],
            "fused_attention": fused_attention_calls(hlo), "device": jax.devices()[0].device_kind}


def fused_attention_calls(hlo: str) -> dict:
    """Fused attention custom calls in compiled HLO text: cuDNN (GPU) and Pallas/Mosaic (TPU)."""
    return {"cudnn_fmha": hlo.count("__cudnn$fmha"), "mosaic": hlo.count("tpu_custom_call")}


def torch_parts(config):
    """The same TinyGroundingGPT as HF PyTorch modules (random weights, fp32)."""
    import torch
    import transformers

    from tgg_jax.spec import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, PAD_FILL
    from tgg_jax.torch.model import TGGExportConfig, TinyGroundingGPT, mlp2x_gelu

    llm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**config.llm.to_hf_dict(),
                                                                 attn_implementation="sdpa"))
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**config.clip.to_hf_dict(),
                                                                      attn_implementation="sdpa"))
    dino = transformers.Dinov2Model(transformers.Dinov2Config(**config.dinov2.to_hf_dict(),
                                                              attn_implementation="sdpa"))
    projector = mlp2x_gelu(config.visual_width, config.llm.hidden_size)
    export = TGGExportConfig(
        select_layer=config.select_layer, select_feature=config.select_feature, fusion=config.fusion,
        object_pool=config.object_pool, image_pool=config.image_pool,
        image_token_id=config.image_token_id, object_token_id=config.object_token_id,
        image_tokens=config.image_tokens, object_tokens=config.object_tokens,
        image_size=config.image_size, clip_mean=tuple(CLIP_MEAN), clip_std=tuple(CLIP_STD),
        dinov2_mean=tuple(IMAGENET_MEAN), dinov2_std=tuple(IMAGENET_STD), pad_fill=tuple(PAD_FILL),
        object_margin=0.1, dtype="float32", parts={})
    return TinyGroundingGPT(export, llm, clip, dino, projector), torch


def train_torch(config, batch: dict, steps: int) -> dict:
    device_name = "cuda" if _torch_cuda() else "cpu"
    with _torch_device(device_name):
        model, torch = torch_parts(config)
    model.train()
    for module in (model.clip, model.dinov2):
        module.requires_grad_(False)
    enable = getattr(model.llm, "activation_checkpointing_enable", None) or model.llm.gradient_checkpointing_enable
    enable({"use_reentrant": False})  # checkpointing kwargs, positional in transformers 4 and 5
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = device_name == "cuda"
    opt = torch.optim.AdamW(params, lr=HYPER["lr"], betas=(HYPER["adam_b1"], HYPER["adam_b2"]),
                            eps=HYPER["adam_eps"], weight_decay=HYPER["weight_decay"], fused=cuda)
    ids = torch.as_tensor(batch["input_ids"].astype(np.int64), device=device_name)
    targets = torch.as_tensor(batch["targets"].astype(np.int64), device=device_name)
    images = torch.as_tensor(batch["images"], device=device_name)
    objects = torch.as_tensor(batch["objects"], device=device_name)
    holder = {}

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_name, dtype=torch.bfloat16):
            logits = model(ids, images, objects).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, HYPER["grad_clip_norm"])
        opt.step()
        holder["loss"] = float(loss.detach())  # synchronises

    first, seconds = timed(run, steps)
    kind = torch.cuda.get_device_name() if cuda else "cpu"
    return {"seconds": seconds, "first_call_s": first, "loss": holder["loss"], "device": kind}


def _torch_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _torch_device(name: str):
    import torch
    return torch.device(name)


def part_train(args) -> dict:
    config = model_config(args.size, args.layers)
    b = TRAIN_BATCH[args.size] if not args.batch else args.batch
    seq = args.seq
    batch = train_batch(config, b, seq)
    result = (train_jax if args.framework == "jax" else train_torch)(config, batch, args.steps)
    flops = model_flops(config, b, seq)
    peak = _peak_flops(result["device"])
    return {"part": "train", "framework": args.framework, "size": args.size, "layers": config.llm.num_layers,
            "batch": b, "seq": seq, "model_flops": flops, "tokens_per_s": b * seq / result["seconds"],
            "mfu": flops / result["seconds"] / peak if peak else None, **result}


def _peak_flops(kind: str) -> float | None:
    from tgg_jax.train.metrics import PEAK_FLOPS
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None


# --- decode -------------------------------------------------------------------------------------

def part_decode(args) -> dict:
    import jax
    from flax import nnx

    from tgg_jax.generate import SamplingConfig, generate, left_pad
    from tgg_jax.models.qwen2 import Qwen2

    size = args.size
    config = model_config(size, args.layers)
    llm_config = dataclasses.replace(config.llm, param_dtype="bfloat16", remat_policy="none")
    model = Qwen2(llm_config, rngs=nnx.Rngs(0))
    b, prompt, new = args.batch or 1, args.prompt, args.new_tokens
    rng = np.random.default_rng(0)
    inputs = left_pad([rng.integers(0, 1000, prompt).astype(np.int32) for _ in range(b)], pad_id=0)
    sampling = SamplingConfig(max_new_tokens=new, stop_ids=(), pad_id=0)
    first, seconds = timed(lambda: generate(model, inputs, sampling), args.steps, warmup=1)
    # Roofline: per new token, all weights once plus the keys/values written so far (mean length).
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    c = llm_config
    kv_per_token = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 2  # k and v, bf16
    kv = b * (prompt + new / 2) * kv_per_token
    kind = jax.devices()[0].device_kind
    bandwidth = next((bw for name, bw in HBM_BANDWIDTH.items() if name.lower() in kind.lower()), None)
    result = {"part": "decode", "size": size, "layers": c.num_layers, "batch": b, "prompt": prompt,
              "new_tokens": new, "seconds": seconds, "first_call_s": first, "device": kind,
              "tokens_per_s": b * new / seconds, "bytes_per_step": weights + kv}
    if bandwidth:
        roof = b * bandwidth / (weights + kv)
        result.update(roofline_tokens_per_s=roof, roofline_fraction=result["tokens_per_s"] / roof)
    return result


# --- all ----------------------------------------------------------------------------------------

def parts(args) -> list[list[str]]:
    sizes = ["tiny"] if args.dry_run else ["1.5b", "3b"]
    common = ["--layers", str(args.layers), "--steps", str(args.steps)]
    out = []
    for size in sizes:
        for framework in ("jax", "torch"):
            out.append(["train", "--framework", framework, "--size", size, *common])
    decode_size = sizes[-1] if args.dry_run else "1.5b"
    for batch in (1, 32):
        out.append(["decode", "--size", decode_size, "--batch", str(batch), *common,
                    "--prompt", str(args.prompt), "--new_tokens", str(args.new_tokens)])
    return out


def summary(results: list[dict]) -> list[str]:
    lines = []
    train = {(r["size"], r["framework"]): r for r in results if r["part"] == "train"}
    for size in dict.fromkeys(s for s, _ in train):
        for fw in ("jax", "torch"):
            r = train.get((size, fw))
            if r:
                mfu = f"MFU {r['mfu']:.3f}" if r.get("mfu") is not None else "MFU n/a (peak unknown)"
                name = "tgg-jax" if fw == "jax" else "pytorch"
                extra = f"compile {r['compile_s']:.1f} s, fused attention calls {r['fused_attention']}" \
                    if fw == "jax" else f"first call {r['first_call_s']:.1f} s"
                lines.append(f"train {size} layers={r['layers']} batch={r['batch']}x{r['seq']} {name:8s} "
                             f"{r['seconds'] * 1e3:8.1f} ms/step {r['tokens_per_s']:9.0f} tokens/s {mfu} "
                             f"({extra}) on {r['device']}")
        if (size, "jax") in train and (size, "torch") in train:
            ratio = train[(size, "torch")]["seconds"] / train[(size, "jax")]["seconds"]
            lines.append(f"train {size} ratio (tgg-jax / pytorch) {ratio:.2f}x")
    for r in (r for r in results if r["part"] == "decode"):
        roof = (f"roofline {r['roofline_tokens_per_s']:.0f} tokens/s, {100 * r['roofline_fraction']:.1f}% of it"
                if "roofline_tokens_per_s" in r else "roofline n/a (bandwidth unknown)")
        lines.append(f"decode {r['size']} layers={r['layers']} batch={r['batch']} {r['tokens_per_s']:9.1f} "
                     f"new tokens/s (prefill of {r['prompt']} included); {roof} on {r['device']}")
    for r in results:
        if r.get("error"):
            lines.append(f"FAILED {' '.join(r['argv'])}: {r['error']}")
    return lines


def run_all(args) -> None:
    if args.dry_run:
        args.layers = 0  # the tiny model's own depth
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gpu_check.jsonl")
    results = []
    for i, argv in enumerate(parts(args)):
        extra = ["--dry-run"] if args.dry_run else []
        print(f"[{i + 1}/{len(parts(args))}] {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        if args.dry_run:  # in this process: seconds, not one interpreter start per part
            result = run_part(build_parser().parse_args(argv + extra))
        else:
            result = _subprocess_part(argv, args.part_timeout)
        result["wall_s"] = time.perf_counter() - t0
        print(json.dumps(result), flush=True)
        results.append(result)
        with open(path, "a") as f:
            f.write(json.dumps(result) + "\n")
    print("\n".join(["", "summary:", *summary(results)]), flush=True)


def _subprocess_part(argv: list[str], timeout: float) -> dict:
    """One part in a fresh interpreter; a failure (OOM, timeout) is recorded, not fatal."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--json"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"part": argv[0], "argv": argv, "error": f"timed out after {timeout:.0f} s"}
    sys.stderr.write(out.stderr[-4000:])
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"part": argv[0], "argv": argv, "error": f"exit {out.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def run_part(args) -> dict:
    if args.dry_run:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        args.size, args.layers = "tiny", 0
        args.seq, args.steps = min(args.seq, 128), 1
        args.prompt, args.new_tokens = min(args.prompt, 16), min(args.new_tokens, 8)
    result = part_train(args) if args.part == "train" else part_decode(args)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["all", "train", "decode"])
    p.add_argument("--framework", choices=["jax", "torch"], default="jax")
    p.add_argument("--size", choices=["1.5b", "3b", "tiny"], default="1.5b")
    p.add_argument("--layers", type=int, default=12, help="decoder layers kept (0: the preset's)")
    p.add_argument("--batch", type=int, default=0, help="train: rows (0: per-size default); decode: batch")
    p.add_argument("--seq", type=int, default=SEQ)
    p.add_argument("--steps", type=int, default=5, help="timed repeats after warm-up")
    p.add_argument("--prompt", type=int, default=DECODE_PROMPT)
    p.add_argument("--new_tokens", type=int, default=DECODE_NEW)
    p.add_argument("--out", default="gpu_check_out")
    p.add_argument("--part_timeout", type=float, default=150.0, help="seconds per part (all)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="CPU, tiny shapes")
    p.add_argument("--json", action="store_true", help="print the part's result as one JSON line")
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.part == "all":
        run_all(args)
        return
    result = run_part(args)
    print(json.dumps(result) if args.json else "\n".join(summary([result])), flush=True)


if __name__ == "__main__":
    main()
