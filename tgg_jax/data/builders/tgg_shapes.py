"""tgg_shapes: the procedurally generated grounding dataset of tgg_jax.data.shapes as TFDS.

No raw files: records are generated from the config's seed (see tgg_jax.data.shapes for the
scenes, tasks and chance levels). Splits train / validation / test use separate random streams,
so they never share an image. Every record carries `task` ("rec", "caption", "object", "yesno",
or "mixed" for multi-turn train records), `gt_box` (pixels; zeros when there is none) and
`answer` (the expected reply of the last turn).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax.data import shape_tasks, shapes
from tgg_jax.data.builders import base, raw_entries, records


# Object questions (a zoomed crop) are the fastest way for a model trained from scratch to tie
# visual features to colour and kind words, and yes/no needs those words found in the image.
WEIGHTED_TRAIN_TASKS = ("object", "yesno", "rec", "object", "caption", "yesno", "object", "describe")
YESNO_ONLY_TRAIN_TASKS = ("yesno",)
# REC is the slowest task to learn from scratch: 3 of 8 records, each asking up to 4 shapes.
REC_TRAIN_TASKS = ("rec", "object", "yesno", "rec", "caption", "object", "rec", "describe")


@dataclasses.dataclass
class TggShapesConfig(tfds.core.BuilderConfig):
    """Split sizes, seed, and the share of multi-turn records in train."""

    train_size: int = 20000
    validation_size: int = 500
    test_size: int = 500
    seed: int = 0
    multi_turn: float = 0.25
    # The train split's task cycle; validation and test always use shape_tasks.TASKS, so every
    # config's held-out splits hold the same records.
    train_tasks: tuple[str, ...] = shape_tasks.TASKS
    # Yes/no questions per train yes/no record (shapes.make_record); held-out records ask one.
    yesno_turns: int = 1
    # REC questions per train REC record, about different shapes (held-out records ask one).
    rec_turns: int = 1


class TggShapes(base.RawDataBuilder):
    """Procedural shapes scenes for grounding: REC, region captions, <object> questions, yes/no."""

    TAKES_IMAGE_ROOT = False  # generated

    name = "tgg_shapes"
    NEEDS_RAW = False
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "'Which shape is shown in <object>?' answers colour and kind only; "
                              "new task 'describe' (image-level caption)."}
    BUILDER_CONFIGS = [
        TggShapesConfig(name="default", description="20000 / 500 / 500 records"),
        TggShapesConfig(name="small", train_size=2000, validation_size=200, test_size=200,
                        description="2000 / 200 / 200 records"),
        TggShapesConfig(name="yesno_multi", train_tasks=WEIGHTED_TRAIN_TASKS, yesno_turns=4,
                        description="default's held-out splits; train weighted 3:2:1:1:1 towards "
                                    "<object> and yes/no questions, each yes/no record asking up to "
                                    "4 questions about its image (answers independent)"),
        TggShapesConfig(name="yesno_only", train_tasks=YESNO_ONLY_TRAIN_TASKS, yesno_turns=4,
                        description="default's held-out splits; every train record asks up to 4 "
                                    "yes/no questions about its image (for mixtures that weight "
                                    "yes/no up)"),
        TggShapesConfig(name="rec_multi", train_tasks=REC_TRAIN_TASKS, yesno_turns=4, rec_turns=4,
                        description="default's held-out splits; train weighted towards REC "
                                    "(3 of 8 records), each REC record asking about up to 4 of its "
                                    "shapes and each yes/no record up to 4 questions"),
        TggShapesConfig(name="tiny", train_size=64, validation_size=32, test_size=32,
                        description="64 / 32 / 32 records, for tests"),
    ]

    def _extra_features(self):
        return {"task": tfds.features.Text(), "gt_box": records.box_feature(),
                "answer": tfds.features.Text()}

    def _raw_splits(self, raw_dir) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        sizes = {"train": config.train_size, "validation": config.validation_size,
                 "test": config.test_size}
        return {split: [raw_entries.Entry(str(i), "tgg_shapes", i) for i in range(n)]
                for split, n in sizes.items() if n > 0}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        config = self.builder_config
        # Eval records stay single-turn, so task / gt_box / answer describe the whole record.
        multi_turn = config.multi_turn if split == "train" else 0.0
        tasks = config.train_tasks if split == "train" else shape_tasks.TASKS
        train = split == "train"
        yield shapes.make_record(config.seed, split, entry.data, multi_turn, tasks=tuple(tasks),
                                 yesno_turns=config.yesno_turns if train else 1,
                                 rec_turns=config.rec_turns if train else 1)


def ensure_built(data_dir: epath.PathLike, config: str = "default") -> TggShapes:
    """The tgg_shapes build in data_dir, generated first if it is not there yet."""
    builder = TggShapes(config=config, data_dir=data_dir)
    if not builder.is_prepared():
        builder.download_and_prepare()
    return builder

