"""Training-step throughput of tgg-jax against an equivalent PyTorch step (the same HF parts,
towers frozen, projector + LLM trained with torch.optim.AdamW and global-norm clipping), same
config, same batch, measured in this run.

    python benchmarks/train_step.py [--size small|1.5b] [--dtype float32|bfloat16] [--cpu_devices N]

Prints steps/s and tokens/s of both and the ratio (goal: tgg-jax >= 1.5x). On a GPU the 1.5b
size also reports MFU. --cpu_devices N runs tgg-jax's step on the CPU split into N devices, the
batch sharded over a `data` mesh axis as the trainer does (config.cpu_devices; PyTorch keeps
its threads): on a 2-core CPU the tiny configs train on two.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from configs import common as common_config  # noqa: E402
from benchmarks.common import SIZES, TRAINABLE, arg_parser, batch, load_both, timeit, train_batch  # noqa: E402
from tgg_jax import distributed  # noqa: E402
from tgg_jax.data import pipeline  # noqa: E402
from tgg_jax.models.tgg import count_params  # noqa: E402
from tgg_jax.sharding import make_mesh  # noqa: E402
from tgg_jax.train import optimizer as opt_lib  # noqa: E402
from tgg_jax.train.metrics import peak_flops_per_device, train_flops_per_step  # noqa: E402
from tgg_jax.train.step import TrainState, make_train_step  # noqa: E402

# The training configs' optimizer settings (configs/common.py), so the benchmark follows them.
HYPER = common_config.get_base_config()
HYPER.total_steps = 1000


def main() -> None:
    p = arg_parser(__doc__, repeats=5)
    p.add_argument("--cpu_devices", type=int, default=1)
    args = p.parse_args()
    distributed.use_cpu_devices(args.cpu_devices)  # before any device is asked for
    size = SIZES[args.size]
    model, reference, config = load_both(size, args.dtype)
    b = batch(size, config)
    n, t = b["input_ids"].shape
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    jb = pipeline.to_global(train_batch(b), mesh)  # rows split over `data`, as the trainer does

    optimizer = opt_lib.make_optimizer(HYPER)
    graphdef, trainable, frozen = nnx.split(model, opt_lib.trainable_filter(TRAINABLE), ...)
    state = TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen,
                       opt_state=optimizer.init(trainable))
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step = jax.jit(make_train_step(graphdef, optimizer, opt_lib.learning_rate_schedule(HYPER)),
                   donate_argnums=0)
    holder = {"state": state}

    def jax_step():
        with jax.set_mesh(mesh):
            holder["state"], metrics = step(holder["state"], jb)
        jax.block_until_ready(metrics["loss"])

    for module in (reference.clip, reference.dinov2):
        module.requires_grad_(False)
    params = [p for p in reference.parameters() if p.requires_grad]
    torch_opt = torch.optim.AdamW(params, lr=HYPER.lr, betas=(HYPER.adam_b1, HYPER.adam_b2),
                                  eps=HYPER.adam_eps, weight_decay=HYPER.weight_decay)
    ids = torch.from_numpy(b["input_ids"].astype(np.int64))
    targets = torch.from_numpy(np.asarray(jb["targets"]).astype(np.int64))

    def torch_step():
        torch_opt.zero_grad(set_to_none=True)
        logits = reference(ids, b["images"], b["objects"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, HYPER.grad_clip_norm)
        torch_opt.step()

    tj = timeit(jax_step, repeats=args.repeats)
    tt = timeit(torch_step, repeats=args.repeats)
    tokens = n * t
    print(f"size={args.size} dtype={args.dtype} batch={n} seq={t} device={jax.devices()[0].device_kind} "
          f"x{len(jax.devices())} torch_threads={torch.get_num_threads()}")
    print(f"tgg-jax  {1 / tj:7.3f} steps/s {tokens / tj:10.0f} tokens/s")
    print(f"pytorch  {1 / tt:7.3f} steps/s {tokens / tt:10.0f} tokens/s")
    print(f"ratio (tgg-jax / pytorch) {tt / tj:.2f}x")
    peak = peak_flops_per_device()
    if np.isfinite(peak):
        flops = train_flops_per_step(count_params(config), tokens, 2 * n, config.grid ** 2)
        print(f"tgg-jax MFU {flops / tj / peak:.3f} (per-device peak {peak:.3g} FLOP/s)")


if __name__ == "__main__":
    main()
