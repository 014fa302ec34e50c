"""Decoding throughput of tgg_jax.generate (fixed-size KV cache, jitted loop) against Hugging Face
`generate` on the same model (the PyTorch assembly of the same HF parts) and the same batch,
measured in this run. Both decode exactly --new_tokens tokens per row (no early stop), greedy.

    python benchmarks/generate.py [--size small|1.5b] [--new_tokens 64]

Prints new tokens/s of both and the ratio (goal: tgg-jax >= 2x).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import SIZES, arg_parser, batch, load_both, timeit  # noqa: E402
from tgg_jax.generate import SamplingConfig, generate, left_pad  # noqa: E402


def main() -> None:
    p = arg_parser(__doc__, repeats=3)
    p.add_argument("--new_tokens", type=int, default=64)
    args = p.parse_args()
    size = SIZES[args.size]
    model, reference, config = load_both(size, args.dtype)
    b = batch(size, config)
    prompts = [row for row in b["input_ids"]]
    inputs = {**left_pad(prompts, pad_id=0), "images": b["images"], "objects": b["objects"]}
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, stop_ids=(), pad_id=0)

    ids = torch.from_numpy(inputs["input_ids"].astype(np.int64))
    mask = torch.from_numpy(inputs["segment_ids"].astype(np.int64))

    def hf():
        return reference.generate(ids, b["images"], b["objects"], attention_mask=mask,
                                  max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                  stop_ids=[0], pad_id=0)

    ours = generate(model, inputs, sampling)
    theirs = hf().numpy()
    agree = float(np.mean(ours[:, :8] == theirs[:, :8]))
    tj = timeit(lambda: generate(model, inputs, sampling), warmup=1, repeats=args.repeats)
    tt = timeit(hf, warmup=1, repeats=args.repeats)
    new = ours.shape[0] * args.new_tokens
    print(f"size={args.size} dtype={args.dtype} batch={ours.shape[0]} prompt={ids.shape[1]} new={args.new_tokens} "
          f"torch_threads={torch.get_num_threads()} first-8-token agreement={agree:.2f}")
    print(f"tgg-jax generate {new / tj:9.1f} new tokens/s ({tj:.2f} s)")
    print(f"HF generate      {new / tt:9.1f} new tokens/s ({tt:.2f} s)")
    print(f"ratio (tgg-jax / HF) {tt / tj:.2f}x")


if __name__ == "__main__":
    main()
