"""Forward and forward+backward time of the tgg-jax model against the PyTorch assembly of the same
Hugging Face parts (tgg_jax.torch), same weights, same batch, measured in this run.

    python benchmarks/model_forward.py [--size small|1.5b] [--dtype float32|bfloat16]

Prints seconds per call and the ratio torch / jax (> 1: tgg-jax is faster). The backward pass
trains the projector and the LLM; the towers are frozen on both sides, as in training.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import SIZES, TRAINABLE, arg_parser, batch, load_both, timeit, train_batch  # noqa: E402
from tgg_jax.train.optimizer import trainable_filter  # noqa: E402
from tgg_jax.train.step import loss_sum_and_count  # noqa: E402



def main() -> None:
    p = arg_parser(__doc__, repeats=5)
    args = p.parse_args()
    size = SIZES[args.size]
    model, reference, config = load_both(size, args.dtype)
    b = batch(size, config)
    t = b["input_ids"].shape[1]
    jb = jax.device_put(train_batch(b))

    graphdef, trainable, frozen = nnx.split(model, trainable_filter(TRAINABLE), ...)

    @jax.jit
    def forward(trainable, frozen, batch):
        m = nnx.merge(graphdef, trainable, frozen)
        return m(batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"],
                 images=batch["images"], objects=batch["objects"])[0]

    @jax.jit
    def forward_backward(trainable, frozen, batch):
        def loss(tr):
            s, c = loss_sum_and_count(nnx.merge(graphdef, tr, frozen), batch, loss_chunk=0)
            return s / c
        return jax.value_and_grad(loss)(trainable)

    ids = torch.from_numpy(b["input_ids"].astype(np.int64))
    targets = torch.from_numpy(np.asarray(jb["targets"]).astype(np.int64))
    for module in (reference.clip, reference.dinov2):
        module.requires_grad_(False)

    def torch_forward():
        with torch.no_grad():
            return reference(ids, b["images"], b["objects"]).logits

    def torch_forward_backward():
        reference.zero_grad(set_to_none=True)
        logits = reference(ids, b["images"], b["objects"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        return loss

    # Same function on both sides before timing it.
    jl = np.asarray(forward(trainable, frozen, jb))
    tl = torch_forward().float().numpy()
    diff = float(np.max(np.abs(jl - tl)))
    print(f"size={args.size} dtype={args.dtype} batch={size.batch} seq={t} devices={jax.devices()[0].device_kind}"
          f" torch_threads={torch.get_num_threads()} max|logits diff|={diff:.2e}")

    results = {}
    for name, jfn, tfn in (
            ("forward", lambda: forward(trainable, frozen, jb).block_until_ready(), torch_forward),
            ("forward+backward", lambda: jax.block_until_ready(forward_backward(trainable, frozen, jb)),
             torch_forward_backward)):
        tj = timeit(jfn, repeats=args.repeats)
        tt = timeit(tfn, repeats=args.repeats)
        results[name] = (tj, tt)
        print(f"{name:18s} tgg-jax {tj * 1e3:9.1f} ms   pytorch {tt * 1e3:9.1f} ms   ratio {tt / tj:5.2f}x")


if __name__ == "__main__":
    main()
