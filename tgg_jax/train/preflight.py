"""Preflight: everything a run needs, checked before a device holds anything or a step compiles.

Each failed check is a `UserError` whose one line names the fix (the CLI prints it and exits 2);
a passing preflight returns the one-screen summary that `tgg-train` prints first (and
`tgg-train --preflight` prints alone): datasets with sizes and weights, steps and epochs, tokens
per step, trainable and frozen parameter counts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile

import tensorflow_datasets as tfds
from flax import nnx

from tgg_jax import checkpoint
from tgg_jax.data import builders
from tgg_jax.data.tokenizer import TggTokenizer, load_tokenizer
from tgg_jax.errors import UserError
from tgg_jax.models.naming import tgg_name
from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT
from tgg_jax.train import state as state_lib
from tgg_jax.train import trainer
from tgg_jax.train.optimizer import check_patterns, trainable_filter


@dataclasses.dataclass
class Dataset:
    name: str
    split: str
    weight: float
    examples: int | None      # None: generated on first use (no raw files)


@dataclasses.dataclass
class Summary:
    datasets: list[Dataset]
    steps: int
    epochs: float
    batch_size: int
    tokens_per_step: int      # batch x longest bucket: the most a step can hold
    trainable: int
    frozen: int
    model: TGGConfig
    init_from: str
    note: str = ""            # a difference the user should see before a long run
    packed: bool = False
    examples_per_step: float = 0.0

    def render(self) -> str:
        total = sum(d.weight for d in self.datasets)
        rows = [f"  {d.name:<46} {d.split:<10} {d.weight / total:6.1%}  "
                + (f"{d.examples:>11,}" if d.examples is not None else "   built on first use")
                for d in self.datasets]
        llm = self.model.llm
        return "\n".join([
            "preflight: ok",
            f"model      LLM {llm.num_layers} layers x {llm.hidden_size} (vocab {llm.vocab_size}), "
            f"CLIP {self.model.clip.num_layers} x {self.model.clip.hidden_size}, DINOv2 "
            f"{self.model.dinov2.num_layers} x {self.model.dinov2.hidden_size}"
            + (f"; from {self.init_from}" if self.init_from else "; fresh"),
            f"parameters {self.trainable:,} trainable, {self.frozen:,} frozen",
            *([self.note] if self.note else []),
            f"schedule   {self.steps:,} steps of {self.batch_size} "
            + (f"packed rows (~{self.examples_per_step:g} examples)" if self.packed
               else "sequences")
            + f" ({self.epochs:g} epochs), at most {self.tokens_per_step:,} tokens a step",
            "datasets   name                                           split       weight     examples",
            *rows,
        ])


def _check_workdir(workdir: str) -> None:
    path = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError(f"workdir {path} is not writable ({e.strerror}): choose another "
                        "--workdir") from None


def _init_from(config) -> str:
    if not config.init_from:
        return ""
    try:
        path = checkpoint.resolve_checkpoint(config.init_from)
        checkpoint.load_config(path)
    except FileNotFoundError as e:
        raise UserError(f"config.init_from: {e} (a `tgg-convert import-hf --out` directory or a "
                        "previous stage's WORKDIR/checkpoints)") from None
    return path


def _tokenizer(config, workdir: str) -> TggTokenizer | None:
    """The tokenizer the run will load, or None when the run makes it (a data.tokenizer hook)."""
    source = trainer.tokenizer_source(config, workdir)
    if source is None:
        return None
    try:
        return load_tokenizer(source)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"config.data.tokenizer: {e}") from None


def build_command(name: str, data_dir: str) -> str:
    """The `tgg-data build` command that builds dataset `name` ("builder[/config]")."""
    builder, _, config = name.partition("/")
    cls = builders.BUILDERS[builder]
    parts = ["tgg-data build", builder]
    if config:
        parts += ["--config", config]
    if cls.NEEDS_RAW:
        parts += ["--raw_dir", "RAW_DIR"]
    return " ".join(parts + ["--data_dir", data_dir])


def check_dataset(name: str, split: str, data_dir: str) -> int | None:
    """The number of examples of a built split; raises UserError naming the build command."""
    builder_name = name.partition("/")[0]
    if builder_name not in builders.BUILDERS:
        raise UserError(f"dataset {name!r} is not a tgg-jax dataset (known: "
                        f"{', '.join(builders.BUILDERS)}; `tgg-data list` shows their configs)")
    if not builders.BUILDERS[builder_name].NEEDS_RAW:
        return None  # generated by the run on first use
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, KeyError) as e:
        raise UserError(f"dataset {name!r}: {str(e).splitlines()[0]}") from None
    if not builder.is_prepared():
        raise UserError(f"dataset {name} is not built in {data_dir}: "
                        f"{build_command(name, data_dir)}")
    splits = builder.info.splits
    if split not in splits:
        raise UserError(f"dataset {name} has no split {split!r} (it has "
                        f"{', '.join(splits)}); fix config.data.mixture / config.data.eval")
    return splits[split].num_examples


def parameter_counts(model_cfg: TGGConfig, patterns) -> tuple[int, int]:
    """(trainable, frozen) parameter counts from shapes alone; the patterns are checked as the
    trainer checks them (each must match, the towers never train)."""
    abstract = nnx.eval_shape(lambda: TinyGroundingGPT(model_cfg, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    check_patterns(patterns, [tgg_name(path) for path, _ in flat],
                   towers_frozen=model_cfg.freeze_towers)
    is_trainable = trainable_filter(patterns)
    trainable = frozen = 0
    for path, var in flat:
        n = math.prod(var.get_value().shape)
        if is_trainable(path, var):
            trainable += n
        else:
            frozen += n
    return trainable, frozen


def run_preflight(config, workdir: str, num_devices: int | None = None) -> Summary:
    """Every check, cheapest first; a UserError names the first that fails."""
    try:
        trainer.validate(config, num_devices=num_devices)
        steps = trainer.total_steps(config)
    except ValueError as e:
        raise UserError(str(e)) from None
    _check_workdir(workdir)
    init_from = _init_from(config)
    data_dir = os.path.expanduser(config.data.data_dir)
    datasets = [Dataset(name, split, float(weight), check_dataset(name, split, data_dir))
                for name, split, weight in config.data.mixture]
    for name, split in config.data.eval:
        check_dataset(name, split, data_dir)
    tokenizer = _tokenizer(config, workdir)
    if tokenizer is None:
        model_cfg = None  # the tokenizer (and so the vocabulary) is made by the run
        trainable = frozen = 0
    else:
        model_cfg = state_lib.model_config(config, tokenizer)
        try:
            trainable, frozen = parameter_counts(model_cfg, tuple(config.trainable))
        except ValueError as e:
            raise UserError(f"config.trainable: {e}") from None
    per_step = trainer.examples_per_step(config)
    epochs = steps * per_step / config.data.num_examples if config.data.num_examples else math.nan
    built = sum(d.examples or 0 for d in datasets)
    note = ""
    if config.data.num_examples and built and abs(built - config.data.num_examples) > 0.05 * built:
        note = (f"note       config.data.num_examples is {config.data.num_examples:,} (what the "
                f"epochs count), the built mixture holds {built:,} examples")
    return Summary(datasets=datasets, steps=steps, epochs=epochs, batch_size=config.batch_size,
                   tokens_per_step=config.batch_size * (config.data.max_length if config.data.packing
                                                        else max(config.data.buckets)),
                   packed=config.data.packing, examples_per_step=per_step,
                   trainable=trainable, frozen=frozen, model=model_cfg, init_from=init_from,
                   note=note)


def render(summary: Summary) -> str:
    if summary.model is None:
        return "preflight: ok (the run makes its tokenizer, and so its model, itself)"
    return summary.render()

