"""`tgg-train --config configs/<file>.py:<arg> --workdir DIR [--config.x=y ...] [--compile_only]`.

Multi-host: `jax.distributed` is initialised from SLURM's or the TPU runtime's environment, or
from --coordinator_address/--num_processes/--process_id. Re-running the same command resumes
from the latest checkpoint in the workdir.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tgg_jax import distributed
from tgg_jax.errors import RunStopped, UserError, flag_error_message
from tgg_jax.train import hooks, preflight, trainer
from tgg_jax.train.plan import compile_only

# No default here: ml_collections would read --config.* overrides from sys.argv while this module
# is imported, beyond parse_flags' reach; parse_flags supplies DEFAULT_CONFIG instead.
DEFAULT_CONFIG = "configs/tiny.py"
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (default: "
                                          f"{DEFAULT_CONFIG}).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, eval output.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False,
                                  "Compile the train step for the config's mesh and print per-device memory.")
_TOPOLOGY = flags.DEFINE_string("topology", "",
                               "With --compile_only: compile for PLATFORM:TOPOLOGY instead of this host's "
                               "devices, e.g. tpu:v5p:2x2x4 (v5p-32; needs libtpu, not a TPU) or "
                               "cuda:1x1x8 (one 8-GPU node; needs the jax-cuda12 plugin and --target_config).")
_TARGET_CONFIG = flags.DEFINE_string("target_config", "",
                                     "With --topology cuda:...: the GPU's GpuTargetConfigProto text file, "
                                     "e.g. launch/gpu_targets/h100_sxm.txtpb.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_PREFLIGHT = flags.DEFINE_bool("preflight", False, "Check the config, data, tokenizer, init_from, "
                                "mesh and workdir, print the run's summary, and stop.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Run the CPU as this many devices (overrides "
                                    "config.cpu_devices; tests simulate hosts with it).")


def initialize_distributed() -> None:
    """jax.distributed from flags, or automatically under SLURM / on TPU / with JAX_COORDINATOR_ADDRESS."""
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)


def main(argv) -> None:
    del argv
    config = _CONFIG.value
    distributed.use_tpu_flags()
    distributed.use_cpu_devices(_CPU_DEVICES.value or config.cpu_devices)
    initialize_distributed()
    if _COMPILE_ONLY.value:
        report = compile_only(config, _TOPOLOGY.value, _TARGET_CONFIG.value)
        print(json.dumps(report, indent=1))
        return
    if not _WORKDIR.value:
        raise UserError("--workdir is required")
    summary = preflight.run_preflight(config, _WORKDIR.value)
    if jax.process_index() == 0:
        print(preflight.render(summary), flush=True)
    if _PREFLIGHT.value:
        return
    run = trainer.setup(config, _WORKDIR.value)
    last = trainer.train(run)
    if config.final_eval.fn and int(run.state.step) >= run.total_steps:
        hooks.resolve(config.final_eval.fn, "final_eval.fn")(run)
    logging.info("done: %s", last)


def config_import_path(argv: list[str]) -> None:
    """Config files import their siblings as `configs.common`: put the folder holding `configs/`
    on sys.path, wherever the command runs from."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        if value:
            path = os.path.abspath(value.split(":", 1)[0])
            sys.path.insert(0, os.path.dirname(os.path.dirname(path)))
            return
    sys.path.insert(0, os.getcwd())


def quiet_libraries() -> None:
    """Keep INFO for tgg-jax's own messages; Orbax and TFDS log every file they touch."""
    noisy = ("/orbax/", "/tensorflow_datasets/", "/grain/")
    logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= pylogging.WARNING or not any(n in record.pathname for n in noisy))


def _user_error(message: str) -> None:
    print(f"tgg-train: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """Parse the flags (and load the config file) up front, so that a mistyped config key or a
    bad config argument is one line (ml_collections' "did you mean" kept), not a traceback."""
    app.define_help_flags()  # --help / --helpfull print the usage and exit 0
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = [argv[0], f"--config={DEFAULT_CONFIG}", *argv[1:]]
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, OSError) as e:
        _user_error(flag_error_message(e, argv))


def run() -> None:
    logging.set_verbosity(logging.INFO)
    quiet_libraries()
    config_import_path(sys.argv)
    remaining = parse_flags(sys.argv)
    try:
        app.run(main, argv=sys.argv, flags_parser=lambda _: remaining)
    except UserError as e:
        _user_error(str(e))
    except RunStopped as e:  # the run stopped itself for a reason it names (NaN, failed save)
        print(f"tgg-train: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
