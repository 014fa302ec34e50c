"""GQA testdev-balanced (SPEC §4): exact-match accuracy and the official predictions file.

    tgg-eval --config configs/eval/gqa.py --checkpoint CKPT --workdir DIR

Data: TFDS dataset `gqa`, split testdev_balanced (records carry `label`; `id` = questionId).
"""

from configs.eval import common


def get_config(arg: str = ""):
    del arg
    return common.get_base_config(name="gqa", evaluator="gqa", dataset="gqa",
                                  splits=("testdev_balanced",), max_new_tokens=16)
