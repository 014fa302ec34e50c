"""`tgg-train --compile_only`: compile the real-size train step for the config's mesh from shapes
alone (no weights, no data) and report per-device memory, so a run's fit is known before a pod
is booked."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import types

import jax
import jax.numpy as jnp
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from tgg_jax import distributed, sharding
from tgg_jax.checkpoint import resolve_checkpoint
from tgg_jax.errors import UserError
from tgg_jax.models import attention
from tgg_jax.data.packing import default_packing_spec
from tgg_jax.spec import IMAGE_TOKEN_ID, OBJECT_TOKEN_ID
from tgg_jax.train import hooks
from tgg_jax.train import optimizer as opt_lib
from tgg_jax.train import state as state_lib
from tgg_jax.train.step import make_train_step
from tgg_jax.train.trainer import example_spec, total_steps, validate

# Without a GPU XLA cannot autotune Triton GEMM tiles (and fails to pick any for some large dots):
# compile GEMMs as cuBLAS calls, as XLA does when Triton GEMMs are off. Memory differs from an
# autotuned run by a GEMM workspace (MiB, not GiB).
GPU_AOT_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}

# Stands in for the tokenizer of a real preset: only its placeholder ids matter here (Qwen2.5's
# entries end just below the first of them).
_QWEN_IDS = types.SimpleNamespace(image_id=IMAGE_TOKEN_ID, object_id=OBJECT_TOKEN_ID,
                                  vocab_size=IMAGE_TOKEN_ID)


def abstract_batch(config, model_cfg, mesh) -> dict:
    """ShapeDtypeStructs of one global batch at the longest bucket, sharded on the batch axes."""
    b, t, s = config.batch_size, max(config.data.buckets), model_cfg.image_size
    n_img, n_obj = 1, config.data.max_objects
    if config.data.packing:
        packed = default_packing_spec(example_spec(config, model_cfg))
        t, n_img, n_obj = packed.max_length, packed.max_images, packed.max_objects
    shard = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=shard)

    return {"input_ids": spec((b, t), jnp.int32), "positions": spec((b, t), jnp.int32),
            "segment_ids": spec((b, t), jnp.int32), "targets": spec((b, t), jnp.int32),
            "target_mask": spec((b, t), jnp.bool_), "images": spec((b, n_img, s, s, 3), jnp.uint8),
            "objects": spec((b, n_obj, s, s, 3), jnp.uint8)}


def topology_devices(topology: str, target_config: str = "") -> list:
    """Devices of an accelerator that need not be attached (JAX ahead-of-time compilation).

    "tpu:v5p:2x2x4" compiles for a v5p-32 slice on any host with libtpu installed;
    "cuda:1x1x8" (partitions x hosts x GPUs per host) for one 8-GPU node on any host with the
    jax-cuda12 plugin and the CUDA compiler wheels, given the GPU's GpuTargetConfigProto
    (`target_config`, a text file such as launch/gpu_targets/h100_sxm.txtpb).
    """
    from jax.experimental import topologies
    platform, _, name = topology.partition(":")
    if not name:
        raise ValueError(f"--topology is PLATFORM:NAME (e.g. tpu:v5p:2x2x4 or cuda:1x1x8), got {topology!r}")
    if platform in ("cuda", "gpu"):
        if not target_config:
            raise ValueError(f"--topology {topology} needs --target_config: the GPU's GpuTargetConfigProto "
                             "text file (e.g. launch/gpu_targets/h100_sxm.txtpb)")
        with open(target_config) as f:
            desc = topologies.get_topology_desc(platform="cuda", topology=name, target_config=f.read())
        return list(desc.devices)
    if target_config:
        raise ValueError(f"--target_config is for GPU topologies (cuda:...), not {topology!r}")
    distributed.use_tpu_flags()  # compile with the flags the run uses (if libtpu is not loaded yet)
    return list(topologies.get_topology_desc(topology_name=name, platform=platform).devices)


def _exists(checkpoint: str) -> bool:
    try:
        resolve_checkpoint(checkpoint)
    except FileNotFoundError:
        return False
    return True


def compile_step(config, topology: str = "", target_config: str = "",
                 depth: tuple[int, int] | None = None) -> dict:
    """Lower and compile one train step for the config's mesh over this host's devices, or over
    `topology`'s. `depth` = (LLM layers, layers of each tower) replaces the model's depth: the
    performance plan compiles shallow copies and extrapolates per layer.

    Returns {"compiled", "lowered", "devices", "mesh", "model_config", "lower_s", "compile_s"}.
    """
    if target_config and not topology:
        raise ValueError("--target_config only applies with --topology cuda:...")
    devices = topology_devices(topology, target_config) if topology else jax.devices()
    validate(config, num_devices=len(devices), process_count=len({d.process_index for d in devices}))
    config.unlock()
    config.total_steps = total_steps(config) if (config.total_steps or config.data.num_examples) else 1000
    config.lock()
    if config.init_from and not _exists(config.init_from):
        # Planning comes before the checkpoint exists: a preset's shapes are the same model.
        if not config.model.preset:
            raise UserError(f"init_from {config.init_from} does not exist, and config.model.preset "
                            "is '': name a preset (--config.model.preset=3b) to plan its shapes")
        logging.info("init_from %s does not exist yet: compiling preset %s's shapes",
                     config.init_from, config.model.preset)
        config.unlock()
        config.init_from = ""
        config.lock()
    if hooks.is_hook(config.data.tokenizer):  # a tokenizer the run makes: made here the same way
        tokenizer = hooks.resolve(config.data.tokenizer, "data.tokenizer")(config)
    else:
        tokenizer = _QWEN_IDS
    model_cfg = state_lib.model_config(config, tokenizer)
    if depth is not None:
        llm_layers, tower_layers = depth
        model_cfg = model_cfg.replace(llm=dataclasses.replace(model_cfg.llm, num_layers=llm_layers),
                                      clip=dataclasses.replace(model_cfg.clip, num_layers=tower_layers),
                                      dinov2=dataclasses.replace(model_cfg.dinov2, num_layers=tower_layers))
    mesh = sharding.make_mesh(dict(config.mesh), devices)
    optimizer = opt_lib.make_optimizer(config)
    graphdef, abstract, _ = state_lib.create_state(model_cfg, optimizer, tuple(config.trainable), config.seed,
                                                   state_lib.param_init(config))
    shardings = state_lib.state_sharding(abstract, optimizer, mesh)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    step = make_train_step(graphdef, optimizer, opt_lib.learning_rate_schedule(config),
                           grad_accum_steps=config.grad_accum_steps, loss_chunk=config.loss_chunk,
                           loss_normalization=config.loss_normalization)
    gpu = devices[0].platform in ("gpu", "cuda") and bool(topology)
    # A GPU plan traces cuDNN's fused attention, what runs on the GPU, even on a host without one.
    kernels = attention.assume_cudnn() if gpu else contextlib.nullcontext()
    with jax.set_mesh(mesh), kernels:
        t0 = time.perf_counter()
        lowered = jax.jit(step, in_shardings=(shardings, None), out_shardings=(shardings, None),
                          donate_argnums=0).lower(abstract, abstract_batch(config, model_cfg, mesh))
        t1 = time.perf_counter()
        compiled = lowered.compile(compiler_options=GPU_AOT_COMPILER_OPTIONS if gpu else None)
        t2 = time.perf_counter()
    return {"compiled": compiled, "lowered": lowered, "devices": devices, "mesh": mesh, "model_config": model_cfg,
            "lower_s": t1 - t0, "compile_s": t2 - t1}


def peak_bytes(compiled) -> dict[str, int]:
    """XLA's memory analysis of a compiled step: its sizes and the per-device peak
    (arguments + outputs + temporaries - donated aliases)."""
    mem = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "alias_size_in_bytes", "generated_code_size_in_bytes")
    sizes = {f: int(getattr(mem, f, 0) or 0) for f in fields}
    sizes["peak"] = sizes["argument_size_in_bytes"] + sizes["output_size_in_bytes"] \
        + sizes["temp_size_in_bytes"] - sizes["alias_size_in_bytes"]
    return sizes


def compile_only(config, topology: str = "", target_config: str = "") -> dict:
    """Compile one train step for the config's mesh over this host's devices, or over `topology`'s."""
    step = compile_step(config, topology, target_config)
    devices, mesh, model_cfg = step["devices"], step["mesh"], step["model_config"]
    sizes = peak_bytes(step["compiled"])
    peak = sizes.pop("peak")
    gib = 1024 ** 3
    return {"preset": config.model.preset, "devices": len(devices),
            "device_kind": devices[0].device_kind, "topology": topology or None, "mesh": dict(mesh.shape),
            "global_batch": config.batch_size, "grad_accum_steps": config.grad_accum_steps, "seq_len": max(config.data.buckets),
            "remat_policy": config.model.remat_policy, "trainable": list(config.trainable),
            **{k.replace("_size_in_bytes", "_gib"): round(v / gib, 3) for k, v in sizes.items()},
            "peak_per_device_gib": round(peak / gib, 3),
            "llm": f"{model_cfg.llm.num_layers} x {model_cfg.llm.hidden_size}, dtype {model_cfg.llm.dtype}"}
