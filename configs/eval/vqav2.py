"""VQAv2 (SPEC §4): the EvalAI answer file (test-dev) or the local 10-annotator accuracy (val).

    tgg-eval --config configs/eval/vqav2.py:testdev --checkpoint CKPT --workdir DIR
    tgg-eval --config configs/eval/vqav2.py:val ...

Data: TFDS dataset `vqav2` with splits testdev / val (records carry `gt_answers`, `answer_type`
where labels are public; `id` = question_id).
"""

from configs.eval import common


def get_config(arg: str = "testdev"):
    split, _ = common.parse_arg(arg, ("testdev", "val"))
    return common.get_base_config(name="vqav2", evaluator="vqav2", dataset="vqav2",
                                  splits=(split,), max_new_tokens=16)
