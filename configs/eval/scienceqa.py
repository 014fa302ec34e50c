"""ScienceQA-IMG (SPEC §4): LLaVA's multiple-choice prompt and letter extraction.

    tgg-eval --config configs/eval/scienceqa.py --checkpoint CKPT --workdir DIR

Data: TFDS dataset `scienceqa`, split test (records carry `choices`, `label`, `hint`, `has_image`).
"""

from configs.eval import common


def get_config(arg: str = ""):
    del arg
    return common.get_base_config(name="scienceqa", evaluator="scienceqa", dataset="scienceqa",
                                  splits=("test",), max_new_tokens=16)
