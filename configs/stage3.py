"""Stage 3: global alignment — instructions, ShareGPT4V, grounding conversations and
descriptions; 2 epochs, batch 16 per device (SPEC §3)."""

from configs import common


def get_config(arg: str = "3b"):
    c = common.get_base_config()
    c.model.preset = common.size_arg(arg)
    c.init_from = "runs/stage2/checkpoints"
    c.data.tokenizer = f"hf/Qwen2.5-{arg.upper()}"
    c.data.mixture = (
        ("llava_conversations/mix665k", "train", 665_000.0),
        ("llava_conversations/sharegpt4v", "train", 102_000.0),
        ("llava_conversations/grounding_conversations", "train", 40_000.0),
        ("llava_conversations/grounding_descriptions", "train", 32_000.0),
    )
    c.data.num_examples = 839_000
    c.epochs = 2.0
    c.lr = 2e-5
    c.batch_size = 16 * common.GPUS_IN_RECIPE
    return c
