"""Stage 1b: LLaVA-Pretrain-595K with sampled caption instructions; projector + LLM (SPEC §3)."""

from configs import common


# Packed: 9 % of a batch's tokens are padding against 39 % in buckets (benchmarks/padding.py).
def get_config(arg: str = "3b"):
    return common.stage_config(
        arg, init_from="runs/stage1_pretrain/checkpoints",
        mixture=(("llava_conversations/pretrain_instruct", "train", 1.0),), num_examples=558_128,
        lr=2e-5, examples_per_row=3.0)
