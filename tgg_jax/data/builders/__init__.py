"""TFDS builders of tgg-jax (ArrayRecord, no TensorFlow needed), one per raw dataset.

Importing this package registers them with TFDS. Build with `tgg-data build NAME --raw_dir ...`
or `make_builder(...).download_and_prepare()`; read with
`tfds.data_source(NAME[/CONFIG], split=..., data_dir=...)`, a random-access source for Grain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from etils import epath

from tgg_jax.data.builders.common import RawDataBuilder, Skip, decode_record, record_features
from tgg_jax.data.builders.flickr30k_entities import Flickr30kEntities
from tgg_jax.data.builders.llava_conversations import LlavaConversations
from tgg_jax.data.builders.pope import Pope
from tgg_jax.data.builders.refcoco import RefCoco
from tgg_jax.data.builders.tgg_shapes import TggShapes
from tgg_jax.data.builders.visual_genome import VisualGenome

BUILDERS: dict[str, type[RawDataBuilder]] = {
    cls.name: cls
    for cls in (LlavaConversations, RefCoco, VisualGenome, Flickr30kEntities, Pope, TggShapes)
}


def make_builder(name: str, *, data_dir: epath.PathLike, raw_dir: epath.PathLike | None = None,
                 config: str | None = None, overrides: dict[str, Any] | None = None,
                 show_progress: bool = False) -> RawDataBuilder:
    """The builder `name` with config `config` (default: its first), fields replaced by
    `overrides` (e.g. {"json_file": "x.json"}; {"name": ...} gives a new output directory)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(BUILDERS)}")
    cls = BUILDERS[name]
    presets = {c.name: c for c in cls.BUILDER_CONFIGS}
    chosen = presets[config] if config in presets else None
    if config is not None and chosen is None:
        if not overrides:
            raise KeyError(f"{name} has no config {config!r}; known: {', '.join(presets)}")
        chosen = dataclasses.replace(cls.BUILDER_CONFIGS[0], name=config)
    chosen = chosen or cls.BUILDER_CONFIGS[0]
    if overrides:
        chosen = dataclasses.replace(chosen, **overrides)
    return cls(config=chosen, data_dir=data_dir, raw_dir=raw_dir, show_progress=show_progress)


__all__ = ["BUILDERS", "RawDataBuilder", "Skip", "decode_record", "make_builder",
           "record_features", *(cls.__name__ for cls in BUILDERS.values())]
