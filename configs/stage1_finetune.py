"""Stage 1b: LLaVA-Pretrain-595K with sampled caption instructions; projector + LLM (SPEC §3)."""

from configs import common, stage1_pretrain


def get_config(arg: str = "3b"):
    c = stage1_pretrain.get_config(arg)
    c.init_from = "runs/stage1_pretrain/checkpoints"
    c.trainable = common.LLM_AND_PROJECTOR
    c.data.mixture = (("llava_conversations/pretrain_instruct", "train", 1.0),)
    c.lr = 2e-5
    return c
