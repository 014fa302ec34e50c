"""Every dataset a shipped config names is a registered builder config (tgg-data can build it)."""

import importlib

import pytest
import tensorflow_datasets as tfds

from tgg_jax.data import builders

STAGES = ("stage1_pretrain", "stage1_finetune", "stage2", "stage3")
SIZES = ("0.5b", "1.5b", "3b", "7b")
EVALS = {"rec": ("refcoco", "refcoco+", "refcocog"), "pope": ("coco",), "gqa": ("",),
         "llava_bench": ("",), "mmbench": ("dev", "test"), "mme": ("",), "scienceqa": ("",),
         "vqav2": ("testdev", "val"), "shapes": ("default", "small")}


def _resolves(dataset: str) -> None:
    name, _, config = dataset.partition("/")
    assert name in builders.BUILDERS, f"{dataset}: no builder {name!r}"
    configs = [c.name for c in builders.BUILDERS[name].BUILDER_CONFIGS]
    assert not config or config in configs, f"{dataset}: {name} has configs {configs}"
    # TFDS itself resolves the name to this builder class and config.
    builder_cls = tfds.builder_cls(name)
    assert builder_cls is builders.BUILDERS[name]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stage", STAGES)
def test_stage_mixtures_resolve(stage, size):
    config = importlib.import_module(f"configs.{stage}").get_config(size)
    assert config.data.mixture
    for dataset, split, weight in config.data.mixture:
        _resolves(dataset)
        assert split == "train" and weight > 0
    for dataset, _ in config.data.eval:
        _resolves(dataset)
    assert config.model.preset == (size if size != "0.5b" else "")
    assert config.data.tokenizer == ""  # the one imported with init_from


def test_stage_mixtures_are_the_papers_table_7():
    weights = {stage: {d: w for d, _, w in importlib.import_module(f"configs.{stage}")
                       .get_config("3b").data.mixture} for stage in STAGES}
    assert weights["stage2"]["llava_conversations/image_box"] == 210_000
    assert weights["stage2"]["llava_conversations/text_image"] == 46_000
    text_box = [w for d, w in weights["stage2"].items() if d.startswith(("refcoco", "visual"))]
    assert sum(text_box) == 4_100_000
    assert weights["stage3"] == {"llava_conversations/sharegpt4v_mix665k": 665_000,
                                 "llava_conversations/grounding_conversations": 40_000,
                                 "llava_conversations/grounding_descriptions": 32_000}


@pytest.mark.parametrize("bench,args", EVALS.items())
def test_eval_datasets_resolve(bench, args):
    module = importlib.import_module(f"configs.eval.{bench}")
    for arg in args:
        config = module.get_config(arg) if arg else module.get_config()
        _resolves(config.dataset)


def test_a_size_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match="Qwen2.5 size"):
        importlib.import_module("configs.stage2").get_config("big")
