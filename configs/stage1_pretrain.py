"""Stage 1a: projector alignment on LLaVA-Pretrain-595K; only the projector trains (SPEC §3)."""

from configs import common


def get_config(arg: str = "3b"):
    c = common.get_base_config()
    c.model.preset = common.size_arg(arg)
    c.init_from = f"checkpoints/tgg_{arg}_hf"  # tgg-convert import-hf output (fresh projector)
    c.trainable = common.PROJECTOR_ONLY
    c.data.tokenizer = f"hf/Qwen2.5-{arg.upper()}"
    c.data.mixture = (("llava_conversations/pretrain", "train", 1.0),)
    c.data.num_examples = 558_128
    c.lr = 1e-3
    c.batch_size = 32 * common.GPUS_IN_RECIPE
    return c
