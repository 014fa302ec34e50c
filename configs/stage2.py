"""Stage 2: fine-grained local alignment — text-box, image-box and text-image pairs (SPEC §3)."""

from configs import common

# Weights are the sample counts of the paper's Table 7.
MIXTURE = (
    ("refcoco/refcoco", "train", 1_000_000.0),
    ("refcoco/refcoco+", "train", 1_000_000.0),
    ("refcoco/refcocog", "train", 1_000_000.0),
    ("visual_genome", "train", 1_100_000.0),
    ("llava_conversations/image_box", "train", 210_000.0),
    ("llava_conversations/text_image", "train", 46_000.0),
)


# Packed: 6 % of a batch's tokens are padding against 67 % in buckets (benchmarks/padding.py).
def get_config(arg: str = "3b"):
    return common.stage_config(arg, init_from="runs/stage1_finetune/checkpoints", mixture=MIXTURE,
                               num_examples=4_356_000, lr=2e-5,
                               examples_per_row=2.8)
