"""What one example looks like to a model: image size, placeholder run lengths, sequence length
and object slots (SPEC §1-2). Training, evaluation and prediction all build it from the model's
config with `for_model`."""

from __future__ import annotations

import dataclasses

from tgg_jax.spec import OBJECT_MARGIN


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What the model expects of one example (derived from the model config)."""
    image_size: int
    image_tokens: int
    object_tokens: int
    max_length: int
    max_objects: int
    object_margin: float = OBJECT_MARGIN
    object_jitter: float = 0.0  # relative jitter of the crop margin; training only
    alpha: str = "drop"  # preprocess.load_image: "drop" (SPEC §2) or "white"


def for_model(model_config, *, max_objects: int, max_length: int = 0,
              object_margin: float = OBJECT_MARGIN, object_jitter: float = 0.0,
              alpha: str = "drop") -> ExampleSpec:
    """The spec of a model (a TGGConfig: image size, `<image>` / `<object>` run lengths).
    max_length 0: the LLM's whole context (prompts at inference are never truncated)."""
    return ExampleSpec(image_size=model_config.image_size, image_tokens=model_config.image_tokens,
                       object_tokens=model_config.object_tokens,
                       max_length=max_length or model_config.llm.max_position_embeddings,
                       max_objects=max_objects, object_margin=object_margin,
                       object_jitter=object_jitter, alpha=alpha)
