"""Stage 3: global alignment — instructions, grounding conversations and descriptions; 2 epochs,
batch 16 per device (SPEC §3).

Table 7's "LLaVA-v1.5, ShareGPT4V: 665K" is one file: ShareGPT4V's release of LLaVA-v1.5's
mixture with 23K captions replaced by ShareGPT4V's (`llava_conversations/mix665k` holds LLaVA's
original, for those who want it instead).
"""

from configs import common

# Weights are the sample counts of the paper's Table 7.
MIXTURE = (
    ("llava_conversations/sharegpt4v_mix665k", "train", 665_000.0),
    ("llava_conversations/grounding_conversations", "train", 40_000.0),
    ("llava_conversations/grounding_descriptions", "train", 32_000.0),
)


# Packed: 23 % of a batch's tokens are padding against 56 % in buckets (benchmarks/padding.py).
def get_config(arg: str = "3b"):
    return common.stage_config(arg, init_from="runs/stage2/checkpoints", mixture=MIXTURE,
                               num_examples=737_000, lr=2e-5, batch_per_device=16, epochs=2.0,
                               examples_per_row=1.75)
