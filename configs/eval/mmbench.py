"""MMBench (SPEC §4): circular accuracy (dev) and the upload sheet (dev or test).

    tgg-eval --config configs/eval/mmbench.py:dev --checkpoint CKPT --workdir DIR
    tgg-eval --config configs/eval/mmbench.py:test ...

Data: TFDS dataset `mmbench`, splits dev / test (records carry `index`, `question`, `hint`,
options `A`-`D`, `label` where public; circular copies included).
"""

from configs.eval import common


def get_config(arg: str = "dev"):
    split, _ = common.parse_arg(arg, ("dev", "test"))
    return common.get_base_config(name="mmbench", evaluator="mmbench", dataset="mmbench",
                                  splits=(split,), max_new_tokens=16)
