"""Stage 3: global alignment — instructions, ShareGPT4V, grounding conversations and
descriptions; 2 epochs, batch 16 per device (SPEC §3)."""

from configs import common

MIXTURE = (
    ("llava_conversations/mix665k", "train", 665_000.0),
    ("llava_conversations/sharegpt4v", "train", 102_000.0),
    ("llava_conversations/grounding_conversations", "train", 40_000.0),
    ("llava_conversations/grounding_descriptions", "train", 32_000.0),
)


def get_config(arg: str = "3b"):
    return common.stage_config(arg, init_from="runs/stage2/checkpoints", mixture=MIXTURE,
                               num_examples=839_000, lr=2e-5, batch_per_device=16, epochs=2.0)
