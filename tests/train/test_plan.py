"""`tgg-train --compile_only`: the step compiles from shapes alone and reports memory that grows
with what the step holds."""

import importlib.util
import os
import pytest

from configs import stage2, tiny
from tgg_jax.train.plan import compile_only


def small(config):
    c = config
    c.model.hidden_size, c.model.intermediate_size, c.model.num_layers = 32, 64, 2
    c.model.vision_width, c.model.vision_layers, c.model.vision_heads = 32, 1, 2
    c.model.image_size, c.model.object_pool = 56, 1
    c.data.max_length, c.data.buckets, c.batch_size = 128, (128,), 8
    return c


def test_compile_only_reports_per_device_memory():
    report = compile_only(small(tiny.get_config()))
    assert report["devices"] == 8 and report["mesh"]["data"] == 8
    assert report["peak_per_device_gib"] > 0
    bigger = small(tiny.get_config())
    bigger.batch_size = 64
    assert compile_only(bigger)["temp_gib"] > report["temp_gib"]  # activations grow with the batch


def test_real_config_validates_before_compiling():
    c = stage2.get_config("7b")
    c.batch_size = 12  # not divisible by the 8 devices of the default mesh
    with pytest.raises(ValueError, match="not divisible"):
        compile_only(c)


def test_a_stage_config_plans_before_its_init_from_exists(monkeypatch, tmp_path):
    """Planning comes before the checkpoint: a missing init_from compiles the preset's shapes,
    and without a preset it is one clear error."""
    from tgg_jax.errors import UserError
    from tgg_jax.train import plan
    seen = []

    def model_config(config, tokenizer):  # what the compile would build its model from
        seen.append((config.init_from, config.model.preset))
        raise RuntimeError("stop")

    monkeypatch.setattr(plan.state_lib, "model_config", model_config)
    c = stage2.get_config("3b")
    c.init_from = str(tmp_path / "not_yet")
    with pytest.raises(RuntimeError, match="stop"):
        compile_only(c)
    assert seen == [("", "3b")]
    c = stage2.get_config("0.5b")  # no preset: the architecture can only come from init_from
    c.init_from = str(tmp_path / "not_yet")
    with pytest.raises(UserError, match="does not exist"):
        compile_only(c)


def test_topology_needs_platform_and_name():
    with pytest.raises(ValueError, match="PLATFORM:NAME"):
        compile_only(small(tiny.get_config()), topology="v5p-32")


def test_topology_mesh_is_checked_against_the_topology(monkeypatch):
    """A topology of 16 devices (stubbed: CI has no TPU compiler) rejects an 8-way mesh before compiling."""
    import types

    from tgg_jax.train import plan
    fake = [types.SimpleNamespace(process_index=i // 4, device_kind="TPU v5") for i in range(16)]
    monkeypatch.setattr(plan, "topology_devices", lambda topology, target_config="": fake)
    c = small(tiny.get_config())
    c.mesh.data, c.mesh.fsdp = 8, 1
    with pytest.raises(ValueError, match="does not fit the 16 devices"):
        compile_only(c, topology="tpu:v5p:2x2x4")


def test_gpu_topology_needs_a_target_config():
    with pytest.raises(ValueError, match="needs --target_config"):
        compile_only(small(tiny.get_config()), topology="cuda:1x1x8")
    with pytest.raises(ValueError, match="only applies with --topology"):
        compile_only(small(tiny.get_config()), target_config="launch/gpu_targets/h100_sxm.txtpb")


H100 = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "gpu_targets", "h100_sxm.txtpb")


def _has_cuda_plugin() -> bool:
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:  # no jax_plugins namespace at all
        return False


@pytest.mark.skipif(not _has_cuda_plugin(),
                    reason="needs the jax-cuda12 plugin (pip install -e '.[gpu-plan]')")
def test_eight_h100_topology_without_a_gpu():
    """The shipped H100 target description parses and gives an 8-device, one-host topology.
    (Compiling the real presets for it takes minutes each: launch/memory_plan.py --target 8xh100.)"""
    from tgg_jax.train.plan import topology_devices
    devices = topology_devices("cuda:1x1x8", H100)
    assert len(devices) == 8 and {d.process_index for d in devices} == {0}
    assert devices[0].device_kind == "NVIDIA H100 80GB HBM3"


def test_the_embedded_default_compiles_as_shipped():
    """configs/tiny.py itself (2-layer LLM, pooled image tokens, stage 0 on) passes the config
    checks and its real step compiles: a broken default would otherwise surface only in the
    README's main command."""
    report = compile_only(tiny.get_config())
    assert report["peak_per_device_gib"] > 0
