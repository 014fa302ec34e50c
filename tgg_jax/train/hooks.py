"""Functions a training config names by import path ("package.module:function"): the trainer's
extension points, which a recipe outside the core (the tiny CPU demo, tgg_jax/tiny/) fills in.

    config.model.preset       (config, tokenizer) -> TGGConfig, instead of a named size
    config.model.param_init   (model, config) -> None, changes a freshly built model in place
    config.data.tokenizer     (config) -> TggTokenizer, a tokenizer the run makes itself
    config.data.prepare       (config, data_dir) -> None, on process 0 before data is read
    config.init_hook          (config, workdir, tokenizer, model_cfg) -> checkpoint path | None,
                              before step 0 of a fresh run: the parameters to start from
    config.final_eval.fn      (run) -> dict, after the last step
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
# Every hook field of the config, checked by the trainer before anything compiles.
FIELDS = ("model.preset", "model.param_init", "data.tokenizer", "data.prepare", "init_hook",
          "final_eval.fn")


def is_hook(value) -> bool:
    """Whether a config value names a function ("package.module:function")."""
    return isinstance(value, str) and bool(_NAME.fullmatch(value))


def resolve(name: str, field: str) -> Callable:
    """The function `name` names; a ValueError naming the config field when it does not exist."""
    if not is_hook(name):
        raise ValueError(f"config.{field} must name a function as 'package.module:function', "
                         f"got {name!r}")
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"config.{field} = {name!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"config.{field} = {name!r} is not a function")
    return fn


def check(config) -> None:
    """Every hook the config names resolves (a typo fails before anything compiles)."""
    for field in FIELDS:
        value = config
        for key in field.split("."):
            value = value.get(key, "") if hasattr(value, "get") else ""
        if is_hook(value) or (value and field not in ("model.preset", "data.tokenizer")):
            resolve(value, field)
