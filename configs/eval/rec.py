"""Referring expression comprehension (SPEC §4): Acc@0.5 per split and their mean.

    tgg-eval --config configs/eval/rec.py:refcoco  --checkpoint CKPT --workdir DIR   # val testA testB
    tgg-eval --config configs/eval/rec.py:refcoco+ ...                               # val testA testB
    tgg-eval --config configs/eval/rec.py:refcocog ...                               # val test
    tgg-eval --config configs/eval/rec.py:refcoco:testA ...                          # chosen splits

Data: `tgg-data build refcoco --config {refcoco,refcoco+,refcocog} --raw_dir REFER_DATA`.
"""

from configs.eval import common

SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
          "refcocog": ("val", "test")}


def get_config(arg: str = "refcoco"):
    name, splits = common.parse_arg(arg, tuple(SPLITS))
    return common.get_base_config(name=name, evaluator="rec", dataset=f"refcoco/{name}",
                                  splits=splits or SPLITS[name], max_new_tokens=48)
