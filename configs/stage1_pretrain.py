"""Stage 1a: projector alignment on LLaVA-Pretrain-595K; only the projector trains (SPEC §3)."""

from configs import common


# Packed: 9 % of a batch's tokens are padding against 39 % in buckets (benchmarks/padding.py).
def get_config(arg: str = "3b"):
    return common.stage_config(
        arg, init_from=f"checkpoints/tgg_{arg}_hf",  # tgg-convert import-hf output (fresh projector)
        mixture=(("llava_conversations/pretrain", "train", 1.0),), num_examples=558_128,
        lr=1e-3, trainable=common.PROJECTOR_ONLY, examples_per_row=3.0)
