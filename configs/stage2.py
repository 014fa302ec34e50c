"""Stage 2: fine-grained local alignment — text-box, image-box and text-image pairs (SPEC §3)."""

from configs import common


def get_config(arg: str = "3b"):
    c = common.get_base_config()
    c.model.preset = common.size_arg(arg)
    c.init_from = "runs/stage1_finetune/checkpoints"
    c.data.tokenizer = f"hf/Qwen2.5-{arg.upper()}"
    # Weights are the sample counts of the paper's Table 6.
    c.data.mixture = (
        ("refcoco/refcoco", "train", 1_000_000.0),
        ("refcoco/refcoco+", "train", 1_000_000.0),
        ("refcoco/refcocog", "train", 1_000_000.0),
        ("visual_genome", "train", 1_100_000.0),
        ("llava_conversations/image_box", "train", 210_000.0),
        ("llava_conversations/text_image", "train", 46_000.0),
    )
    c.data.num_examples = 4_356_000
    c.lr = 2e-5
    c.batch_size = 32 * common.GPUS_IN_RECIPE
    return c
