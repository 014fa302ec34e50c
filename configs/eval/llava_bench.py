"""LLaVA-Bench (In-the-Wild) (SPEC §4): the answers file that LLaVA's GPT-4 judge script reads.

    tgg-eval --config configs/eval/llava_bench.py --checkpoint CKPT --workdir DIR

Data: TFDS dataset `llava_bench`, split test (`id` = question_id, `question` as asked).
"""

from configs.eval import common


def get_config(arg: str = ""):
    del arg
    c = common.get_base_config(name="llava_bench", evaluator="llava_bench", dataset="llava_bench",
                               splits=("test",), max_new_tokens=512)
    c.evaluator.model_id = "tinygroundinggpt"
    c.batch_size = 4
    return c
