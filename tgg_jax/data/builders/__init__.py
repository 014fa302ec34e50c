"""TFDS builders of tgg-jax (ArrayRecord, no TensorFlow needed), one per raw dataset.

Importing this package registers them with TFDS. Build with `tgg-data build NAME --raw_dir ...`
or `make_builder(...).download_and_prepare()`; read with
`tfds.data_source(NAME[/CONFIG], split=..., data_dir=...)`, a random-access source for Grain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from etils import epath

from tgg_jax.data.builders.base import RawDataBuilder
from tgg_jax.data.builders.raw_entries import Skip
from tgg_jax.data.builders.flickr30k_entities import Flickr30kEntities
from tgg_jax.data.builders.gqa import Gqa
from tgg_jax.data.builders.llava_bench import LlavaBench
from tgg_jax.data.builders.llava_conversations import LlavaConversations
from tgg_jax.data.builders.mmbench import Mmbench
from tgg_jax.data.builders.mme import Mme
from tgg_jax.data.builders.pope import Pope
from tgg_jax.data.builders.records import decode_record, record_features
from tgg_jax.data.builders.refcoco import RefCoco
from tgg_jax.data.builders.scienceqa import Scienceqa
from tgg_jax.data.builders.tgg_shapes import TggShapes
from tgg_jax.data.builders.visual_genome import VisualGenome
from tgg_jax.data.builders.vqav2 import Vqav2

BUILDERS: dict[str, type[RawDataBuilder]] = {
    cls.name: cls
    for cls in (LlavaConversations, RefCoco, VisualGenome, Flickr30kEntities, Pope, TggShapes,
                # Evaluation benchmarks (SPEC §4).
                Vqav2, Gqa, Scienceqa, Mme, Mmbench, LlavaBench)
}


def make_builder(name: str, *, data_dir: epath.PathLike, raw_dir: epath.PathLike | None = None,
                 config: str | None = None, overrides: dict[str, Any] | None = None,
                 show_progress: bool = False,
                 image_root: epath.PathLike | None = None) -> RawDataBuilder:
    """The builder `name` with config `config` (default: its first preset).

    `overrides` replaces fields of that preset, e.g. {"name": "my_set", "json_file": "x.json"};
    it must include a new "name", because TFDS stores every config under its name and a preset's
    name stays bound to the preset's content. `image_root` (builders that take one) is where the
    images live when not under raw_dir: an input path, so the name stays.
    """
    if name not in BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(BUILDERS)}")
    cls = BUILDERS[name]
    presets = {c.name: c for c in cls.BUILDER_CONFIGS}
    base = presets.get(config or cls.BUILDER_CONFIGS[0].name)
    if base is None:
        raise KeyError(f"{name} has no config {config!r}; known: {', '.join(presets)}")
    chosen = base
    if overrides:
        if overrides.get("name", base.name) in presets:
            raise ValueError(f"{name}: overriding fields of config {base.name!r} needs a new "
                             "config name (overrides['name'], or `--set name=NEW` on the CLI); "
                             f"preset names are taken: {', '.join(presets)}")
        chosen = dataclasses.replace(base, **overrides)
    if image_root and not cls.TAKES_IMAGE_ROOT:
        raise ValueError(f"{name} takes no image_root: its images are found under raw_dir")
    return cls(config=chosen, data_dir=data_dir, raw_dir=raw_dir, show_progress=show_progress,
               image_root=image_root)

__all__ = ["BUILDERS", "RawDataBuilder", "Skip", "decode_record", "make_builder",
           "record_features", *(cls.__name__ for cls in BUILDERS.values())]
