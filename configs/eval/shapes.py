"""tgg_shapes test split (the built-in synthetic data): per-task scores beside the constant
baselines on the same records.

    tgg-eval --config configs/eval/shapes.py --checkpoint runs/tiny/checkpoints/600 --workdir DIR
    tgg-eval --config configs/eval/shapes.py:small ...      # the tgg_shapes/small build

Data: built by `tgg-train --config configs/tiny.py` or `tgg-data build tgg_shapes [--config small]`.
"""

from configs.eval import common


def get_config(arg: str = "default"):
    name, splits = common.parse_arg(arg, ("default", "small", "tiny"))
    c = common.get_base_config(name="tgg_shapes", evaluator="tgg_shapes",
                               dataset="tgg_shapes" if name == "default" else f"tgg_shapes/{name}",
                               splits=splits or ("test",), max_new_tokens=32)
    c.max_objects = 1                  # "object" questions carry one <object>
    c.batch_size = 8
    return c
