"""`tgg-eval --config configs/eval/<benchmark>.py[:arg] --checkpoint CKPT --workdir DIR
[--config.x=y ...]`: generate answers for a benchmark with a checkpoint and score them.

Every process answers its shard of each split on its own devices (see tgg_jax.evals.runner);
rerunning the same command resumes a killed job. Multi-host: `jax.distributed` from SLURM's or
the TPU runtime's environment, or from --coordinator_address/--num_processes/--process_id.
Output in DIR: predictions/<split>.jsonl, metrics.json, the benchmark's submission file.
"""

from __future__ import annotations

import importlib
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tgg_jax import distributed, evals, sharding
from tgg_jax.data.example_spec import for_model
from tgg_jax.data.pipeline import open_source
from tgg_jax.errors import UserError
from tgg_jax.evals import runner
from tgg_jax.inference import Answerer, checkpoint_tokenizer, load_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval/*.py).",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Parameter checkpoint directory "
                                  "(CKPT/params + tgg_config.json, or a run's checkpoints/<step>).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: predictions, metrics, submission.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Tokenizer directory (default: found beside "
                                 "the checkpoint).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Simulate this many CPU devices (testing).")


def source_opener(config):
    """open(dataset, split, data_dir) -> records by index: TFDS (the project's builders) unless
    config.source names another as "module:function"."""
    if not config.source:
        return open_source
    module, _, name = config.source.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"config.source {config.source!r}: cannot load it ({e}); expected "
                         "'module:function'") from e


def open_split(open_source, dataset: str, split: str, data_dir: str):
    try:
        return open_source(dataset, split, data_dir)
    except Exception as e:  # TFDS says "manual dir missing" (an AssertionError) for unbuilt data
        name, _, builder_config = dataset.partition("/")
        build = f"tgg-data build {name}" + (f" --config {builder_config}" if builder_config else "")
        raise ValueError(f"cannot open split {split!r} of {dataset} under {data_dir}: build it "
                         f"first ({build} --data_dir {data_dir} ...; see "
                         f"`tgg-data list`) or set --config.data_dir ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e


def build_answerer(config, checkpoint: str, tokenizer_dir: str | None = None):
    """The checkpoint's model on this host's devices (mesh config.mesh over jax.local_devices()),
    answering config.batch_size questions per data-parallel device at a time."""
    mesh = sharding.make_mesh(dict(config.mesh), devices=jax.local_devices())
    model, model_config = load_model(checkpoint, mesh=mesh, dtype=config.dtype)
    tokenizer = checkpoint_tokenizer(checkpoint, tokenizer_dir)
    spec = for_model(model_config, max_objects=config.max_objects,
                     object_margin=config.object_margin)
    host_batch = config.batch_size * mesh.shape["data"] * mesh.shape["fsdp"]
    return Answerer(model, tokenizer, spec, batch_size=host_batch,
                    max_new_tokens=config.max_new_tokens, pad_to_multiple=config.pad_to_multiple,
                    mesh=mesh)


def run_info(config, checkpoint: str) -> dict:
    """What makes two runs' predictions interchangeable (checked when resuming)."""
    keys = ("evaluator", "dataset", "splits", "limit", "prompt_from", "max_new_tokens",
            "max_objects", "object_margin", "dtype")
    info = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys}
    info["checkpoint"] = os.path.abspath(os.path.expanduser(checkpoint))
    return info


def evaluate(config, checkpoint: str, workdir: str, *, tokenizer_dir: str | None = None,
             answerer=None) -> dict | None:
    """Run config's benchmark with the checkpoint into workdir (resuming what is there).
    Returns the metrics on process 0, None on the others. `answerer` replaces the model (tests)."""
    evaluator = evals.from_config(config.evaluator.to_dict())
    open_source = source_opener(config)
    data_dir = os.path.expanduser(config.data_dir)
    splits = [runner.Split(name=s, label=f"{config.name}_{s}",
                           source=open_split(open_source, config.dataset, s, data_dir),
                           limit=config.limit)
              for s in config.splits]
    workdir = os.path.abspath(os.path.expanduser(workdir))
    info = run_info(config, checkpoint)
    if not os.path.isdir(info["checkpoint"]):
        raise UserError(f"--checkpoint {checkpoint}: no such directory")
    # Refuse a workdir of another run before spending minutes loading the model; write its
    # run.json only once the model has loaded, so a mistyped --checkpoint leaves no trace.
    runner.check_run(workdir, {**info, "process_count": jax.process_count()}, jax.process_index(),
                     write=False)
    answerer = answerer or build_answerer(config, checkpoint, tokenizer_dir)
    return runner.run(evaluator, answerer, splits, workdir, batch_size=answerer.batch_size,
                      prompt_from=config.prompt_from, run_info=info)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name, flag in (("--config", _CONFIG), ("--checkpoint", _CHECKPOINT), ("--workdir", _WORKDIR)):
        if not flag.value:
            raise app.UsageError(f"{name} is required")
    distributed.use_tpu_flags()
    distributed.use_cpu_devices(_CPU_DEVICES.value)
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        evaluate(_CONFIG.value, _CHECKPOINT.value, _WORKDIR.value, tokenizer_dir=_TOKENIZER.value)
    except UserError as e:
        print(f"tgg-eval: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def config_import_path(argv: list[str]) -> None:
    """Eval configs import `configs.eval.common`: put the folder holding `configs/` on sys.path,
    wherever the command runs from."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        if value:
            folder = os.path.dirname(os.path.abspath(value.split(":", 1)[0]))
            while folder != os.path.dirname(folder) and os.path.basename(folder) != "configs":
                folder = os.path.dirname(folder)
            if os.path.basename(folder) == "configs":
                sys.path.insert(0, os.path.dirname(folder))
                return
    sys.path.insert(0, os.getcwd())


def run() -> None:
    logging.set_verbosity(logging.INFO)
    config_import_path(sys.argv)
    app.run(main, argv=sys.argv)


if __name__ == "__main__":
    run()
