"""launch/hlo_costs.py: its HLO readers against XLA's own cost analysis of steps compiled here
(8 CPU devices), and against library calls and loops written as the GPU and TPU compilers write
them, priced by hand."""

import os
import sys

import jax
import jax.numpy as jnp
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
import hlo_costs  # noqa: E402


def entry(*lines: str) -> str:
    """A module of one computation holding `lines`."""
    return "ENTRY %main () -> () {\n" + "\n".join(lines) + "\n}\n"


def test_collective_bytes_of_a_compiled_fsdp_matmul():
    """x [64, 256] (batch-sharded) @ w [256, 512] (rows sharded over 8 devices), gradient of w:
    w is all-gathered (256*512*4 bytes out, 7/8 of it received from the others) and its
    gradient reduce-scattered (out = 1/8 of it, 7 shards sent)."""
    mesh = jax.make_mesh((8,), ("fsdp",))
    x = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
    w = jax.ShapeDtypeStruct((256, 512), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w))), out_shardings=w.sharding)
    compiled = grad.lower(w, x).compile()
    sent = hlo_costs.collective_bytes(compiled.as_text(), 8)
    w_bytes = 256 * 512 * 4
    assert sent["all-gather"] == pytest.approx(w_bytes * 7 / 8)
    # XLA:CPU may lower the gradient's reduce-scatter as an all-reduce (then 2 * 7/8 of w).
    assert sent["reduce-scatter"] + sent["all-reduce"] / 2 == pytest.approx(w_bytes * 7 / 8)
    flops = compiled.cost_analysis()["flops"]
    assert flops >= 2 * 2 * (64 // 8) * 256 * 512  # forward and weight-gradient matmuls per device


def test_gemm_costs_of_a_cublas_call():
    """A cuBLAS GEMM as the GPU compiler writes it: [24, 888] x [888, 4736] in bf16."""
    hlo = entry(*[
        "  %a = bf16[24,888]{1,0} parameter(0)",
        "  %b = bf16[888,4736]{1,0} parameter(1)",
        '  %custom-call.1 = (f32[24,4736]{1,0}, s8[4194304]{0}) custom-call(%a, %b), '
        'custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{'
        '"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}'])
    flops, nbytes = hlo_costs.gemm_costs(hlo)
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
    hlo = entry(*[call("f", "Softmax", fwd), call("g", "Softmax", fwd, branch="branch_1_fun"),
                     call("b", "SoftmaxBackward", "(bf16[2,4,8,16]{3,1,2,0}, bf16[2,1,8,16]{3,1,2,0}, "
                          "bf16[2,1,8,16]{3,1,2,0}, u8[0]{0})"),
                     call("t", "Softmax", fwd, branch="", mask="NO_MASK")])
    flops, nbytes = hlo_costs.fmha_costs(hlo)
    bntsh = 2 * 4 * 8 * 8 * 16
    assert flops == 4 * bntsh / 2 + 10 * bntsh / 2 + 4 * bntsh
    operands = (2 * 8 * 4 * 16 + 2 * 2 * 8 * 16) * 2
    assert nbytes == 2 * (operands + 2 * 4 * 8 * 16 * 2 + 2 * 4 * 8 * 4) + operands + (2 * 4 * 8 * 16 + 2 * 2 * 8 * 16) * 2


def test_array_bytes_reads_tpu_layouts_and_tuples():
    assert hlo_costs.array_bytes("bf16[2,16]{1,0:T(2,128)(2,1)S(1)}") == 64
    assert hlo_costs.array_bytes("(f32[4]{0}, u32[]{:S(2)})") == 20


CONVOLUTIONS = {
    # XLA:TPU's batched matmul: batch dims as spatial ones, lhs_dilate = window, one tap each.
    "batch_as_dilated_window": (lambda l, r: lax.conv_general_dilated(l, r, (39, 15), ((0, 0), (0, 0)),
                                                                      lhs_dilation=(40, 16)),
                                (1, 8, 40, 16), (4, 8, 40, 16)),
    "padded_strided_dilated": (lambda l, r: lax.conv_general_dilated(l, r, (2, 1), ((3, 1), (0, 2)), lhs_dilation=(1, 2),
                                                                     rhs_dilation=(2, 1)),
                               (2, 6, 11, 9), (5, 6, 3, 4)),
    "feature_groups": (lambda l, r: lax.conv_general_dilated(l, r, (1, 1), "SAME", feature_group_count=3),
                       (2, 6, 7, 7), (9, 2, 3, 3)),
    "batch_groups": (lambda l, r: lax.conv_general_dilated(l, r, (1, 1), "VALID", batch_group_count=2),
                     (4, 6, 7, 7), (8, 6, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(CONVOLUTIONS))
def test_conv_flops_count_the_taps_xla_counts(name):
    """Padding, strides, both dilations and groups: only taps that land on input count, as in
    XLA's HloCostAnalysis (the reference), for the convolution the CPU compiler emits."""
    fn, lhs, rhs = CONVOLUTIONS[name]
    compiled = jax.jit(fn).lower(jnp.ones(lhs), jnp.ones(rhs)).compile()
    module = hlo_costs.Module(compiled.as_text())
    convs = [(result, rest) for c in module.computations for _, result, op, rest in module.instructions(c)
             if op == "convolution"]
    assert len(convs) == 1
    assert module.conv_flops(*convs[0]) == compiled.cost_analysis()["flops"]


def test_loop_extra_completes_xla_count_of_a_loop():
    """XLA counts a while body once: its count of a 5-iteration loop of matmuls plus the loop's
    extra runs equals its count of the same loop unrolled."""
    x, w = jnp.ones((64, 128)), jnp.ones((128, 128))
    looped = jax.jit(lambda x, w: lax.fori_loop(0, 5, lambda i, x: jnp.tanh(x @ w), x)).lower(x, w).compile()
    unrolled = jax.jit(lambda x, w: lax.scan(lambda x, _: (jnp.tanh(x @ w), None), x, None, length=5,
                                             unroll=True)[0]).lower(x, w).compile()
    flops, nbytes = hlo_costs.Module(looped.as_text()).loop_extra()
    assert flops == 4 * 2 * 64 * 128 * 128
    assert looped.cost_analysis()["flops"] + flops == pytest.approx(unrolled.cost_analysis()["flops"], abs=8)
    # each extra run moves what one unrolled iteration does (the loop counter aside)
    assert nbytes / 4 == pytest.approx(unrolled.cost_analysis()["bytes accessed"] / 5, rel=1e-3)


def test_bytes_are_counted_as_xla_counts_them():
    """A loop that reads a dynamic slice of x and writes its row of the result in place: bytes
    as XLA's cost analysis counts them (slices read, updates written, not whole buffers)."""
    def step(x, w):
        def row(i, out):
            y = jnp.tanh(lax.dynamic_index_in_dim(x, i, keepdims=False) @ w)
            return lax.dynamic_update_slice(out, y[None], (i, 0, 0))
        return lax.fori_loop(0, 8, row, jnp.zeros((8, 64, 128)))
    compiled = jax.jit(step).lower(jnp.ones((8, 64, 128)), jnp.ones((128, 128))).compile()
    module = hlo_costs.Module(compiled.as_text())
    assert module.counted_bytes() == pytest.approx(compiled.cost_analysis()["bytes accessed"], rel=1e-3)


def test_a_loop_of_unknown_length_is_reported_not_priced():
    x, w = jnp.ones((64, 128)), jnp.ones((128, 128))
    step = jax.jit(lambda x, w, n: lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, jnp.tanh(c[1] @ w)),
                                                  (0, x))[1])
    module = hlo_costs.Module(step.lower(x, w, 5).compile().as_text())
    assert len(module.unpriced_loops) == 1 and module.loop_extra() == (0.0, 0.0)


# A windowed einsum as XLA:TPU writes it (names shortened): the counter starts at 0 (the
# operand tuple), steps by 2 (the body's root, unrolled twice) while < 8, so the body runs 4
# times; each run multiplies a [16, 32] shard into [64, 16] and passes the shard on.
WINDOWED_EINSUM = """\
%fused_conv (p0: bf16[64,32], p1: bf16[16,32]) -> f32[64,16] {
  %p0 = bf16[64,32]{1,0} parameter(0)
  %p1 = bf16[16,32]{1,0} parameter(1)
  ROOT %convolution.1 = f32[64,16]{1,0} convolution(%p0, %p1), dim_labels=bf_oi->bf
}

%body (param: (f32[64,16], bf16[64,32], bf16[16,32], u32[])) -> (f32[64,16], bf16[64,32], bf16[16,32], u32[]) {
  %param = (f32[64,16]{1,0}, bf16[64,32]{1,0}, bf16[16,32]{1,0}, u32[]) parameter(0)
  %acc = f32[64,16]{1,0} get-tuple-element(%param), index=0
  %x = bf16[64,32]{1,0} get-tuple-element(%param), index=1
  %w = bf16[16,32]{1,0} get-tuple-element(%param), index=2
  %i = u32[] get-tuple-element(%param), index=3
  %fusion.1 = f32[64,16]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused_conv
  %next = bf16[16,32]{1,0} collective-permute(%w), source_target_pairs={{0,1},{1,0}}
  %two = u32[] constant(2)
  %i.next = u32[] add(%i, %two)
  ROOT %tuple.2 = (f32[64,16]{1,0}, bf16[64,32]{1,0}, bf16[16,32]{1,0}, u32[]) tuple(%fusion.1, %x, %next, %i.next)
}

%cond (param.1: (f32[64,16], bf16[64,32], bf16[16,32], u32[])) -> pred[] {
  %param.1 = (f32[64,16]{1,0}, bf16[64,32]{1,0}, bf16[16,32]{1,0}, u32[]) parameter(0)
  %eight = u32[] constant(8)
  %i.1 = u32[] get-tuple-element(%param.1), index=3
  ROOT %compare = pred[] compare(%i.1, %eight), direction=LT
}

ENTRY %main (a: f32[64,16], b: bf16[64,32], c: bf16[16,32]) -> (f32[64,16], bf16[64,32], bf16[16,32], u32[]) {
  %a = f32[64,16]{1,0} parameter(0)
  %b = bf16[64,32]{1,0} parameter(1)
  %c = bf16[16,32]{1,0} parameter(2)
  %zero = u32[] constant(0)
  %tuple.1 = (f32[64,16]{1,0}, bf16[64,32]{1,0}, bf16[16,32]{1,0}, u32[]) tuple(%a, %b, %c, %zero)
  ROOT %while = (f32[64,16]{1,0}, bf16[64,32]{1,0}, bf16[16,32]{1,0}, u32[]) while(%tuple.1), condition=%cond, body=%body
}
"""


def test_windowed_einsum_loop_by_hand():
    module = hlo_costs.Module(WINDOWED_EINSUM)
    assert module.runs["body"] == 4 and module.counted["body"] == 1 and module.runs["fused_conv"] == 4
    flops, nbytes = module.loop_extra()
    assert flops == 3 * 2 * 64 * 16 * 32
    # the fusion reads x and w and writes acc; the add's scalars; the permute is communication
    assert nbytes == 3 * (64 * 32 * 2 + 16 * 32 * 2 + 64 * 16 * 4 + 3 * 4)
    assert hlo_costs.collective_bytes(WINDOWED_EINSUM, 2)["collective-permute"] == 4 * 16 * 32 * 2


def test_splash_costs_of_pallas_attention_kernels():
    """Splash kernels as XLA:TPU writes them (q [2, 4, 512, 64], k/v [2, 1, 512, 64], a causal
    mask grid of 4 x 4 blocks: 10 kept): a forward kernel and the fused backward (dkv)."""
    def call(name, result, extra=""):
        return (f"  %{name} = {result} custom-call(%m, %n, %q, %k, %v), custom_call_target=\"tpu_custom_call\", "
                "operand_layout_constraints={s8[1,4,4]{2,1,0}, s8[1,4,4]{2,1,0}, bf16[2,4,512,64]{3,2,1,0}, "
                f"bf16[2,1,512,64]{{3,2,1,0}}, bf16[2,1,512,64]{{3,2,1,0}}{extra}}}, backend_config={{\"custom_call_config\": {{}}}}")
    hlo = entry(*[call("splash_mha_fwd_segmented_residuals.4", "(bf16[2,4,512,64]{3,2,1,0}, f32[2,4,512]{2,1,0})"),
                     call("splash_mha_dkv_segmented_no_residuals.1", "(bf16[2,1,512,64]{3,2,1,0}, bf16[2,1,512,64]{3,2,1,0})",
                          extra=", f32[2,4,512]{2,1,0}")])
    flops, nbytes = hlo_costs.splash_costs(hlo)
    bntsh = 2 * 4 * 512 * 512 * 64
    assert flops == (4 + 10) * bntsh * 10 / 16
    inputs = 2 * 4 * 4 + (2 * 4 * 512 * 64 + 2 * 2 * 512 * 64) * 2
    assert nbytes == (inputs + 2 * 4 * 512 * 64 * 2 + 2 * 4 * 512 * 4) + (inputs + 2 * 4 * 512 * 4 + 2 * 2 * 512 * 64 * 2)
