"""Each accelerator kernel's formulation of the segment rule, checked on the CPU against a softmax
written out in numpy (an independent reference): cuDNN's (causal + row lengths, causal + bias,
dense mask) run through XLA with the same arguments, Pallas splash attention in Pallas' interpreter."""

import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tgg_jax import sharding
from tgg_jax.models import attention
from tgg_jax.models.attention import Segments


def reference(q, k, v, q_segments, kv_segments, q_offset=0):
    """softmax(q k^T / sqrt(H)) v over the keys of the query's segment at the same or an earlier slot
    (query t at slot q_offset + t), GQA by repeating each key head N / K times."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            seen = [s for s in range(k.shape[1])
                    if kv_segments[b][s] == q_segments[b][t] and s <= q_offset + t]
            logits = np.einsum("nh,snh->ns", q[b, t], k[b, seen]) / np.sqrt(q.shape[-1])
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out[b, t] = np.einsum("ns,snh->nh", probs, v[b, seen])
    return out


def qkv(batch, t, s=None, heads=4, kv_heads=2, head_dim=8, seed=0):
    rng = np.random.default_rng(seed)
    s = t if s is None else s
    return (jnp.asarray(rng.normal(size=(batch, t, heads, head_dim)), jnp.float32),
            jnp.asarray(rng.normal(size=(batch, s, kv_heads, head_dim)), jnp.float32),
            jnp.asarray(rng.normal(size=(batch, s, kv_heads, head_dim)), jnp.float32))


RIGHT_PADDED = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7, [3, 3, 0, 0, 0, 0, 0]], np.int32)
PACKED = np.array([[1, 1, 1, 2, 2, 0, 0], [1] * 7, [1, 2, 2, 2, 3, 3, 3]], np.int32)


@pytest.mark.parametrize("rows, lengths, unpacked", [
    ([[1, 1, 1, 0, 0]], [3], True),
    ([[1, 1, 1, 1, 1], [2, 2, 0, 0, 0]], [5, 2], True),  # any one segment id
    ([[1, 1, 2, 2, 0]], [4], False),  # packed
    ([[0, 0, 1, 1, 1]], [3], False),  # left-padded
    ([[1, 1, 0, 1, 0]], [3], False),  # a hole
    ([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], [3, 0], False),  # a row of padding only
    ([[1, 1, 1, 0, 0], [1, 2, 0, 0, 0]], [3, 2], False),  # one packed row decides for the batch
])
def test_which_rows_cudnn_takes_as_lengths(rows, lengths, unpacked):
    got_lengths, got_unpacked = attention.unpacked_lengths(jnp.asarray(rows, jnp.int32))
    np.testing.assert_array_equal(got_lengths, lengths)
    assert bool(got_unpacked) == unpacked


def test_cudnn_lengths_formulation_right_padded_rows():
    """is_causal + query/key lengths: real tokens as the reference; queries past a row's length
    give exactly 0, which tells this branch from the bias one (there they see earlier padding)."""
    q, k, v = qkv(3, 7)
    out = np.asarray(attention.cudnn_attention(q, k, v, Segments(jnp.asarray(RIGHT_PADDED)), implementation="xla"))
    real = RIGHT_PADDED != 0
    np.testing.assert_allclose(out[real], reference(q, k, v, RIGHT_PADDED, RIGHT_PADDED)[real], atol=1e-5)
    assert np.all(out[~real] == 0)


def test_cudnn_bias_formulation_packed_rows():
    """is_causal + same-segment mask: every slot, padding included, as the reference."""
    q, k, v = qkv(3, 7, seed=1)
    out = attention.cudnn_attention(q, k, v, Segments(jnp.asarray(PACKED)), implementation="xla")
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, PACKED, PACKED), atol=1e-5)
    left_padded = np.array([[0, 0, 0, 0, 1, 1, 1]], np.int32)  # padding queries see earlier padding
    q, k, v = qkv(1, 7, seed=2)
    out = attention.cudnn_attention(q, k, v, Segments(jnp.asarray(left_padded)), implementation="xla")
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, left_padded, left_padded), atol=1e-5)


def test_cudnn_formulation_with_a_kv_cache():
    """Left-padded prompts in a cache: queries at slots 4..5 of 8, the dense mask."""
    q, k, v = qkv(2, 2, s=8, seed=3)
    cache = np.array([[0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]], np.int32)
    segments = Segments(jnp.asarray(cache[:, 4:6]), jnp.asarray(cache), jnp.asarray(4, jnp.int32))
    out = attention.cudnn_attention(q, k, v, segments, implementation="xla")
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, cache[:, 4:6], cache, q_offset=4), atol=1e-5)


@pytest.mark.parametrize("segment_ids", [RIGHT_PADDED, PACKED], ids=["lengths", "bias"])
def test_cudnn_formulations_have_the_gradients_of_the_dense_mask(segment_ids):
    """Gradients of q, k, v through either branch (lax.cond) equal those of XLA with the dense mask,
    for a loss on real tokens (padding outputs are never used)."""
    q, k, v = qkv(3, 7, seed=4)
    segments = Segments(jnp.asarray(segment_ids))
    weights = jnp.asarray(np.random.default_rng(5).normal(size=q.shape)) * (segment_ids != 0)[:, :, None, None]

    def loss(fn):
        return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * weights), argnums=(0, 1, 2))(q, k, v)

    got = loss(lambda q, k, v: attention.cudnn_attention(q, k, v, segments, implementation="xla"))
    want = loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=segments.mask()))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5)


def test_cudnn_formulations_per_shard_under_a_mesh():
    """Each device picks the form for its own rows (shard_map): here two devices' rows are
    right-padded (lengths) and two packed (bias); the result is the reference's on real tokens."""
    q, k, v = qkv(4, 7, heads=2, kv_heads=2, seed=10)
    rows = np.concatenate([RIGHT_PADDED[:2], PACKED[:1], PACKED[2:]])
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    with jax.set_mesh(mesh):
        out = jax.jit(lambda q, k, v, ids: attention.cudnn_attention(q, k, v, Segments(ids), implementation="xla")
                      )(q, k, v, jnp.asarray(rows))
    real = rows != 0
    np.testing.assert_allclose(np.asarray(out)[real], reference(q, k, v, rows, rows)[real], atol=1e-5)
    assert np.all(np.asarray(out)[:2][~real[:2]] == 0)  # the lengths form on the first device's rows


def test_segments_mask_is_attention_mask():
    ids = jnp.asarray(PACKED)
    np.testing.assert_array_equal(Segments(ids).mask(), attention.attention_mask(ids, ids))


def _abstract_mesh(platform: str, kind: str):
    from jax._src.mesh import AbstractDevice, AbstractMesh
    return AbstractMesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                        abstract_device=AbstractDevice(kind, None, platform))


def test_attend_routes_segments_by_the_compiled_for_platform(monkeypatch):
    """Traced for a TPU mesh, self-attention goes to splash and a cache to XLA; for a GPU mesh in
    bf16, both go to the cuDNN formulations; on the CPU everything is XLA with the dense mask."""
    calls = []
    real_dpa = jax.nn.dot_product_attention
    monkeypatch.setattr(attention, "splash_attention", lambda q, *a, **kw: calls.append("splash") or q)
    monkeypatch.setattr(attention, "cudnn_attention", lambda q, *a, **kw: calls.append("cudnn") or q)
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda *a, **kw: calls.append(f"xla mask={kw.get('mask') is not None}") or real_dpa(*a, **kw))
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(3, 7))
    own = Segments(jnp.asarray(PACKED))
    cached = Segments(jnp.asarray(PACKED), jnp.asarray(PACKED), jnp.asarray(0, jnp.int32))
    for platform, kind, expected in (("tpu", "TPU v5p", ["splash", "xla mask=True"]),
                                     ("gpu", "NVIDIA H100 80GB HBM3", ["cudnn", "cudnn"]),
                                     ("cpu", "cpu", ["xla mask=True", "xla mask=True"])):
        calls.clear()
        with jax.sharding.use_abstract_mesh(_abstract_mesh(platform, kind)):
            for segments in (own, cached):
                jax.jit(lambda q, k, v, s: attention.attend(q, k, v, mask=s)).trace(q, k, v, segments)
        assert calls == expected, (platform, calls)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="a host with a GPU has cuDNN to trace")
def test_gpu_without_cudnn_falls_back_to_the_dense_mask():
    """On this host cuDNN's trace-time probe raises, so a GPU-mesh trace compiles XLA's attention."""
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(3, 7))
    with jax.sharding.use_abstract_mesh(_abstract_mesh("gpu", "NVIDIA H100 80GB HBM3")):
        text = jax.jit(lambda q, k, v: attention.attend(q, k, v, mask=Segments(jnp.asarray(PACKED)))
                       ).trace(q, k, v).lower().as_text()
    assert "cudnn" not in text


# Splash attention in Pallas' interpreter: GQA (4 query heads on 2 key heads), head dim 128 as in
# every Qwen2.5 size, lengths that are not a multiple of 128 (padded up inside).
SPLASH_ROWS = np.array([[1] * 9 + [2] * 6 + [0] * 5, [1] * 20, [0] * 3 + [1] * 17, [4] * 12 + [0] * 8], np.int32)


def test_splash_attention_packed_rows_match_the_reference():
    q, k, v = qkv(4, 20, head_dim=128, seed=6)
    out = attention.splash_attention(q, k, v, jnp.asarray(SPLASH_ROWS), interpret=True)
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, SPLASH_ROWS, SPLASH_ROWS), atol=1e-4)


def test_splash_attention_gradients_match_the_dense_mask():
    """Through splash's fused backward kernel; T = 130 pads to 256, one 256-wide tile."""
    rows = np.concatenate([np.repeat([1, 2, 3], [50, 40, 30]), np.zeros(10)]).astype(np.int32)[None]
    q, k, v = qkv(1, 130, head_dim=128, seed=7)
    weights = jnp.asarray(np.random.default_rng(8).normal(size=q.shape), jnp.float32)

    def grads(fn):
        return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * weights), argnums=(0, 1, 2))(q, k, v)

    got = grads(lambda q, k, v: attention.splash_attention(q, k, v, jnp.asarray(rows), interpret=True))
    want = grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=Segments(jnp.asarray(rows)).mask()))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-4)


def test_splash_attention_per_shard_under_a_mesh():
    """Batch over data x fsdp, query and key heads over tensor (shard_map), as the model's rules
    shard them: the same result as one device."""
    q, k, v = qkv(4, 20, head_dim=128, seed=9)
    ids = jnp.asarray(SPLASH_ROWS)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    with jax.set_mesh(mesh):
        out = jax.jit(lambda q, k, v, ids: attention.splash_attention(q, k, v, ids, interpret=True))(q, k, v, ids)
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, SPLASH_ROWS, SPLASH_ROWS), atol=1e-4)


# Ahead-of-time compiles of a small decoder step (forward and backward, bf16, 2 layers, head dim 128,
# batch sharded fsdp-wise) for accelerators this host does not have, with the compilers of the
# `gpu-plan` extra and libtpu. Without them these tests skip; the plan scripts install both.
H100_TARGET = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "gpu_targets", "h100_sxm.txtpb")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # no parent package (jax_plugins) at all
        return False


def _compiled_step_hlo(devices) -> str:
    from flax import nnx

    from tgg_jax.models import qwen2
    cfg = qwen2.tiny(hidden_size=256, num_heads=2, num_kv_heads=1, intermediate_size=256, dtype="bfloat16",
                     remat_policy="full")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: qwen2.Qwen2(cfg, rngs=nnx.Rngs(0))))
    batch, t = 4, 256

    def loss(state, ids, segment_ids):
        logits, _ = nnx.merge(graphdef, state)(ids, positions=jnp.broadcast_to(jnp.arange(t), ids.shape),
                                               segment_ids=segment_ids)
        return jnp.mean(logits)

    mesh = sharding.make_mesh({"data": 1, "fsdp": len(devices), "tensor": 1}, devices)
    # conftest's "highest" would ask Mosaic for bf16 matmuls at fp32 precision, which it rejects.
    with jax.set_mesh(mesh), jax.default_matmul_precision("default"):
        shardings = sharding.state_shardings(state, mesh)
        state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
        ids = jax.ShapeDtypeStruct((batch, t), jnp.int32, sharding=sharding.logical_to_spec(("batch", "seq")))
        return jax.jit(jax.grad(loss)).lower(state, ids, ids).compile().as_text()


@pytest.mark.skipif(not _has_module("libtpu"), reason="needs libtpu (pip install 'libtpu==0.0.42.*'; "
                    "run with JAX_PLATFORMS=cpu), the TPU compiler")
def test_v5p_step_compiles_the_splash_kernel():
    from jax.experimental import topologies
    devices = topologies.get_topology_desc(topology_name="v5p:2x2x1", platform="tpu").devices
    hlo = _compiled_step_hlo(list(devices))
    kernels = set(re.findall(r"%(splash_\w+?)(?:\.\d+)? = ", hlo))
    assert kernels == {"splash_mha_fwd_segmented_residuals", "splash_mha_dkv_segmented_no_residuals"}, kernels
    # 2 layers x (forward, its recomputation under full remat, fused backward)
    assert hlo.count('custom_call_target="tpu_custom_call"') == 6


@pytest.mark.skipif(not _has_module("jax_plugins.xla_cuda12"),
                    reason="needs the jax-cuda12 plugin (pip install -e '.[gpu-plan]'), the GPU compiler")
def test_h100_step_compiles_the_cudnn_kernels():
    """Both cuDNN formulations (lengths: fmhaSoftmax; packed rows: fmhaScaleBiasSoftmax), forward
    and backward. JAX asks for the local cuDNN's version while tracing; without `assume_cudnn` a
    host with no GPU compiles XLA's attention."""
    from tgg_jax.train.plan import topology_devices
    devices = topology_devices("cuda:1x1x4", H100_TARGET)
    with attention.assume_cudnn():
        hlo = _compiled_step_hlo(devices)
    calls = [line for line in hlo.splitlines() if 'custom_call_target="__cudnn$fmha' in line]
    assert set(re.findall(r'custom_call_target="(__cudnn\$fmha\w*)"', "\n".join(calls))) == {
        "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward",
        "__cudnn$fmhaScaleBiasSoftmax", "__cudnn$fmhaScaleBiasSoftmaxBackward"}
    # Each device's own row (batch 4 over 4 devices), never the gathered batch.
    assert all(re.search(r"= \(bf16\[1,", line) for line in calls), calls[0][:300]
    if jax.default_backend() != "gpu":
        assert "__cudnn$fmha" not in _compiled_step_hlo(devices)
