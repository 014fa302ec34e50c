"""POPE object hallucination (SPEC §4): accuracy, precision, recall, F1, yes-ratio per category.

    tgg-eval --config configs/eval/pope.py --checkpoint CKPT --workdir DIR
    tgg-eval --config configs/eval/pope.py:coco:adversarial ...

Data: `tgg-data build pope --raw_dir POPE` (coco_pope_{random,popular,adversarial}.json + val2014/).
"""

from configs.eval import common

CATEGORIES = ("random", "popular", "adversarial")


def get_config(arg: str = "coco"):
    name, splits = common.parse_arg(arg, ("coco",))
    return common.get_base_config(name="pope", evaluator="pope", dataset=f"pope/{name}",
                                  splits=splits or CATEGORIES, max_new_tokens=16)
