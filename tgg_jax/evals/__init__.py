"""Benchmark evaluators (SPEC §4): prompts, official scoring and submission files.

    evaluator = tgg_jax.evals.get_evaluator("pope")      # or from_config(config.evals.pope)
    turns = evaluator.prompt(example)
    scores = evaluator.score(predictions)                # {"adversarial/f1": 0.8446, ...}
"""

from collections.abc import Mapping
from typing import Any

from tgg_jax.evals.base import Evaluator, write_submission
from tgg_jax.evals.gqa import GqaEvaluator
from tgg_jax.evals.llava_bench import LlavaBenchEvaluator
from tgg_jax.evals.mmbench import MmbenchEvaluator
from tgg_jax.evals.mme import MmeEvaluator
from tgg_jax.evals.pope import PopeEvaluator
from tgg_jax.evals.rec import RecEvaluator
from tgg_jax.evals.scienceqa import ScienceqaEvaluator
from tgg_jax.evals.shapes_evaluator import ShapesEvaluator
from tgg_jax.evals.vqav2 import Vqav2Evaluator

EVALUATORS: dict[str, type[Evaluator]] = {
    cls.name: cls
    for cls in (RecEvaluator, PopeEvaluator, Vqav2Evaluator, GqaEvaluator, ScienceqaEvaluator,
                MmeEvaluator, MmbenchEvaluator, LlavaBenchEvaluator, ShapesEvaluator)
}


def get_evaluator(name: str, **kwargs: Any) -> Evaluator:
    """The evaluator registered under name, built with kwargs."""
    if name not in EVALUATORS:
        raise KeyError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}")
    return EVALUATORS[name](**kwargs)


def from_config(config: Mapping[str, Any]) -> Evaluator:
    """An evaluator from a config: its `name` plus constructor fields (e.g. `model_id`)."""
    kwargs = dict(config)
    return get_evaluator(kwargs.pop("name"), **kwargs)


__all__ = ["EVALUATORS", "Evaluator", "from_config", "get_evaluator", "write_submission"]
