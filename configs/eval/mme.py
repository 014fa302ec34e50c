"""MME (SPEC §4): perception and cognition scores (acc + acc+ per subtask).

    tgg-eval --config configs/eval/mme.py --checkpoint CKPT --workdir DIR

Data: TFDS dataset `mme`, split test (records carry `label` Yes/No and `category`; questions are
paired by image for acc+).
"""

from configs.eval import common


def get_config(arg: str = ""):
    del arg
    return common.get_base_config(name="mme", evaluator="mme", dataset="mme", splits=("test",),
                                  max_new_tokens=16)
