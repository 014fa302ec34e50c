"""The tiny configs' data: tgg_shapes builds generated on first use, so the demo needs nothing
but the repository."""

from __future__ import annotations

from tgg_jax.data.builders import tgg_shapes


def dataset_names(config) -> list[str]:
    """Every dataset the run reads: mixture, held-out losses, and the final evaluation's."""
    names = {m[0] for m in config.data.mixture} | {e[0] for e in config.data.eval}
    if config.final_eval.enabled:
        names.add(config.final_eval.dataset)
    return sorted(names)


def ensure_built(config, data_dir: str) -> None:
    """config.data.prepare hook of the tiny configs: build every tgg_shapes dataset the run
    reads that is not in `data_dir` yet (the trainer runs it on process 0 only)."""
    for name in dataset_names(config):
        builder, _, builder_config = name.partition("/")
        if builder == tgg_shapes.TggShapes.name:
            tgg_shapes.ensure_built(data_dir, builder_config or "default")
