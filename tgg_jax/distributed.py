"""Starting JAX for one process of a job: XLA:TPU's flags, simulated CPU devices and
`jax.distributed`.

Shared by `tgg-train` and `tgg-eval`, whose --cpu_devices / --coordinator_address /
--num_processes / --process_id flags land here.
"""

from __future__ import annotations

import os


# XLA:TPU flags every tgg-jax compile uses (what the user sets in LIBTPU_INIT_ARGS wins). By
# default XLA:TPU runs FSDP matmuls as windowed einsums, whose loops add each shard's partial
# product into the full output through HBM: on v5p-32 every step then moves 2.6-3x the HBM bytes
# and the 1.5B and 3B steps are HBM-bound (docs/performance.md). Without them the all-gathers
# are left to XLA's asynchronous collectives to hide.
TPU_FLAGS = {"xla_tpu_enable_windowed_einsum_for_all_gather": "false",
             "xla_tpu_enable_windowed_einsum_for_reduce_scatter": "false"}


def use_tpu_flags(environ=os.environ) -> None:
    """Add TPU_FLAGS to LIBTPU_INIT_ARGS, except flags it names already; must run before libtpu
    loads (the first TPU backend or topology)."""
    current = environ.get("LIBTPU_INIT_ARGS", "")
    extra = [f"--{name}={value}" for name, value in TPU_FLAGS.items() if f"--{name}" not in current]
    if extra:
        environ["LIBTPU_INIT_ARGS"] = " ".join([current, *extra]).strip()


def use_cpu_devices(count: int) -> None:
    """Run the CPU as `count` devices (0: JAX's default, one); must run before JAX creates its
    backends. Tests simulate hosts with it; on a small CPU host two devices run a tiny model's
    step faster than one (configs/tiny.py)."""
    if count:
        import jax
        jax.config.update("jax_num_cpu_devices", count)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """jax.distributed from explicit values, or automatically under SLURM / on TPU / with
    JAX_COORDINATOR_ADDRESS; a single process otherwise."""
    import jax
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()  # cluster auto-detection reads SLURM's environment
    elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()
