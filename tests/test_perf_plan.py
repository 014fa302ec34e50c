"""launch/perf_plan.py: its arithmetic against hand-computed values, and its HLO readers against
steps compiled here (8 CPU devices) whose FLOPs and collectives are known."""

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
import perf_plan  # noqa: E402


def test_roofline_takes_the_slowest_resource():
    hw = dict(flops=1e12, hbm=1e11, link=1e10, devices=8)
    # 2e12 FLOPs -> 2 s; 1e11 bytes -> 1 s; 3e10 bytes over the links -> 3 s: bound by comm.
    r = perf_plan.roofline(2e12, 1e11, 3e10, hw)
    assert (r["compute_s"], r["hbm_s"], r["comm_s"]) == (2.0, 1.0, 3.0)
    assert r["step_s"] == 3.0 and r["bound"] == "comm"
    assert perf_plan.roofline(5e12, 1e11, 3e10, hw)["bound"] == "compute"


def test_model_flops_are_the_trainers():
    """6 N per LLM token (LLM + projector), 2 N per patch token of each tower, by hand from the
    preset's parameter counts."""
    from tgg_jax.models.tgg import PRESETS, count_params
    counts = count_params(PRESETS["1.5b"]())
    expected = 6 * (counts["llm"] + counts["projector"]) * 4 * 2048 + 2 * (counts["clip"] + counts["dinov2"]) * 576 * 4 * 5
    assert perf_plan.model_flops("1.5b", "stage3", 4, 2048, 5) == pytest.approx(expected)


def test_plan_row_mfu_ceiling_by_hand(monkeypatch):
    """A row whose compiles grow by 10 FLOPs per LLM layer and 1 per tower layer: at depth
    (28, 24) the per-device FLOPs are 100 + 26*10 + 22*1 = 382; the step is compute-bound."""
    monkeypatch.setattr(perf_plan, "model_flops", lambda *a: 8 * 300.0)
    hw = dict(devices=8, flops=100.0, hbm=1e9, link=1e9, source="")
    monkeypatch.setitem(perf_plan.HARDWARE, "toy", hw)

    def point(llm, tower):
        return {"flops": 100 + 10 * (llm - 2) + (tower - 2), "hbm_bytes": 1.0, "comm_bytes": 1.0,
                "peak_bytes": 5.0 * llm, "compile_s": 3.0 * llm + tower}
    points = {d: point(*d) for d in (*perf_plan.SHALLOW, perf_plan.TOWER_PROBE)}
    row = perf_plan.plan_row("toy", "1.5b", "stage3", points, (28, 24), 16, 2048, 5)
    assert row["flops"] == pytest.approx(382) and row["peak_bytes"] == pytest.approx(140)
    assert row["compile_s"] == 3 * 2 + 2  # the shallow compile's, not extrapolated
    assert row["step_s"] == pytest.approx(3.82) and row["bound"] == "compute"
    assert row["xla_over_model"] == pytest.approx(382 / 300)
    assert row["mfu_ceiling"] == pytest.approx(300 / 382)


def test_time_to_paper_by_hand():
    """Recipe steps: 1a ceil(558128/256) = 2181, 1b 2181, 2 ceil(4356000/256) = 17016,
    3 ceil(2*737000/128) = 11516."""
    rows = {s: {"size": "3b", "step_s": t, "model_flops": f} for s, t, f in
            (("stage1_pretrain", 1.0, 0.0), ("stage2", 2.0, 989e12 * 8), ("stage3", 3.0, 989e12 * 4))}
    assert perf_plan.time_to_paper(rows) == 2181 * 1.0 + (2181 + 17016) * 2.0 + 11516 * 3.0
    assert perf_plan.time_to_paper(rows, mfu=0.5) == pytest.approx((2181 + 17016) * 2.0 + 11516 * 1.0)


def test_collective_bytes_of_a_compiled_fsdp_matmul():
    """x [64, 256] (batch-sharded) @ w [256, 512] (rows sharded over 8 devices), gradient of w:
    w is all-gathered (256*512*4 bytes out, 7/8 of it received from the others) and its
    gradient reduce-scattered (out = 1/8 of it, 7 shards sent)."""
    mesh = jax.make_mesh((8,), ("fsdp",))
    x = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
    w = jax.ShapeDtypeStruct((256, 512), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w))), out_shardings=w.sharding)
    compiled = grad.lower(w, x).compile()
    sent = perf_plan.collective_bytes(compiled.as_text(), 8)
    w_bytes = 256 * 512 * 4
    assert sent["all-gather"] == pytest.approx(w_bytes * 7 / 8)
    # XLA:CPU may lower the gradient's reduce-scatter as an all-reduce (then 2 * 7/8 of w).
    assert sent["reduce-scatter"] + sent["all-reduce"] / 2 == pytest.approx(w_bytes * 7 / 8)
    flops = compiled.cost_analysis()["flops"]
    assert flops >= 2 * 2 * (64 // 8) * 256 * 512  # forward and weight-gradient matmuls per device


def test_gemm_costs_of_a_cublas_call():
    """A cuBLAS GEMM as the GPU compiler writes it: [24, 888] x [888, 4736] in bf16."""
    hlo = "\n".join([
        "  %a = bf16[24,888]{1,0} parameter(0)",
        "  %b = bf16[888,4736]{1,0} parameter(1)",
        '  %custom-call.1 = (f32[24,4736]{1,0}, s8[4194304]{0}) custom-call(%a, %b), '
        'custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{'
        '"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}'])
    flops, nbytes = perf_plan.gemm_costs(hlo)
    assert flops == 2 * 24 * 4736 * 888
    assert nbytes == 24 * 4736 * 4 + 24 * 888 * 2 + 888 * 4736 * 2


def test_fmha_costs_of_cudnn_attention_calls():
    """cuDNN attention as the GPU compiler writes it (q [2, 8, 4, 16], k/v [2, 8, 1, 16]): a
    causal forward call, its backward, a call in the other branch of the decoder's lax.cond
    (not counted), and a forward without a mask (a tower's)."""
    def call(name, target, result, branch="branch_0_fun", mask="PADDING_CAUSAL"):
        return (f"  %{name} = {result} custom-call(%q, %k, %v), custom_call_target=\"__cudnn$fmha{target}\", "
                "operand_layout_constraints={bf16[2,8,4,16]{3,2,1,0}, bf16[2,8,1,16]{3,2,1,0}, "
                "bf16[2,8,1,16]{3,2,1,0}}, api_version=API_VERSION_STATUS_RETURNING, "
                f'metadata={{op_name="jit(step)/shard_map/cond/{branch}/dot_product_attention"}}, '
                f'backend_config={{"cudnn_fmha_backend_config": {{"mask_type": "{mask}"}}}}')
    fwd = "(bf16[2,4,8,16]{3,1,2,0}, f32[2,4,8]{2,1,0}, u8[0]{0})"
    hlo = "\n".join([call("f", "Softmax", fwd), call("g", "Softmax", fwd, branch="branch_1_fun"),
                     call("b", "SoftmaxBackward", "(bf16[2,4,8,16]{3,1,2,0}, bf16[2,1,8,16]{3,1,2,0}, "
                          "bf16[2,1,8,16]{3,1,2,0}, u8[0]{0})"),
                     call("t", "Softmax", fwd, branch="", mask="NO_MASK")])
    flops, nbytes = perf_plan.fmha_costs(hlo)
    bntsh = 2 * 4 * 8 * 8 * 16
    assert flops == 4 * bntsh / 2 + 10 * bntsh / 2 + 4 * bntsh
    operands = (2 * 8 * 4 * 16 + 2 * 2 * 8 * 16) * 2
    assert nbytes == 2 * (operands + 2 * 4 * 8 * 16 * 2 + 2 * 4 * 8 * 4) + operands + (2 * 4 * 8 * 16 + 2 * 2 * 8 * 16) * 2


def test_array_bytes_reads_tpu_layouts_and_tuples():
    assert perf_plan._array_bytes("bf16[2,16]{1,0:T(2,128)(2,1)S(1)}") == 64
    assert perf_plan._array_bytes("(f32[4]{0}, u32[]{:S(2)})") == 20
    assert math.isclose(perf_plan.extrapolate({(2, 2): 1.0, (4, 2): 3.0, (2, 4): 2.0}, (10, 6)), 1 + 8 + 2)
    assert np.isfinite(perf_plan.HARDWARE["8xh100"]["flops"])
