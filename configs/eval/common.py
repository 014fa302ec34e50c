"""Fields shared by every eval config; a benchmark's file sets its evaluator, dataset and splits.

Run:  tgg-eval --config configs/eval/<benchmark>.py[:arg] --checkpoint CKPT --workdir DIR
               [--config.limit=100 --config.batch_size=8 ...]
"""

from collections.abc import Sequence

import ml_collections


def get_base_config(*, name: str, evaluator: str, dataset: str, splits: Sequence[str],
                    max_new_tokens: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = name                      # split labels are "{name}_{split}" (REC: "refcoco_val")
    c.evaluator = ml_collections.ConfigDict({"name": evaluator})  # + its constructor fields
    c.dataset = dataset                # TFDS name[/config], as built by tgg-data
    c.splits = tuple(splits)
    c.data_dir = "~/tensorflow_datasets"
    c.source = ""                      # "module:function(dataset, split, data_dir)" instead of TFDS
    c.prompt_from = "record"           # ask the record's question (builders write SPEC §2 prompts),
                                       # or "evaluator": evaluator.prompt(record fields)
    c.limit = 0                        # first N examples of each split; 0: all
    c.batch_size = 16                  # questions per data-parallel device
    c.max_new_tokens = max_new_tokens
    c.pad_to_multiple = 64             # prompts left-padded to a multiple: few compiled shapes
    c.max_objects = 0                  # <object> crops per question (each costs two tower passes)
    c.object_margin = 0.1              # SPEC §2 zoom margin of object crops
    c.dtype = ""                       # compute dtype override ("bfloat16"); "": the checkpoint's
    # Each host runs its own copy of the model over its own devices (batches never cross hosts).
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return c


def parse_arg(arg: str, names: Sequence[str], default: str = "") -> tuple[str, tuple[str, ...]]:
    """"NAME" or "NAME:SPLIT,SPLIT" -> (NAME, splits or ()); NAME must be one of `names`."""
    name, _, splits = (arg or default).partition(":")
    if name not in names:
        raise ValueError(f"config argument must be one of {', '.join(names)} (optionally "
                         f"followed by :SPLIT,SPLIT), got {arg!r}")
    return name, tuple(s for s in splits.split(",") if s)
