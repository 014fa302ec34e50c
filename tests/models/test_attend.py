"""Kernel choice in `attend`: cuDNN on GPU for half precision, XLA otherwise and as fallback."""

import jax
import jax.numpy as jnp
import numpy as np

from tgg_jax.models import attention


def _qkv(dtype):
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 5, 4, 8)), dtype)
    kv = jnp.asarray(rng.normal(size=(2, 5, 2, 8)), dtype)  # GQA: 4 query heads, 2 kv heads
    return q, kv, kv


def test_cpu_uses_xla_and_matches_a_plain_softmax():
    q, k, v = _qkv(jnp.float32)
    mask = jnp.tril(jnp.ones((5, 5), bool))[None, None]
    out = np.asarray(attention.attend(q, k, v, mask=mask))
    kk = np.repeat(np.asarray(k), 2, axis=2)
    vv = np.repeat(np.asarray(v), 2, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", np.asarray(q), kk) / np.sqrt(8)
    logits = np.where(np.asarray(mask), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bnts,bsnh->btnh", probs, vv), atol=1e-5)


def test_gpu_half_precision_asks_for_cudnn_and_falls_back(monkeypatch):
    calls = []
    real = jax.nn.dot_product_attention

    def fake(*args, implementation=None, **kwargs):
        calls.append(implementation)
        if implementation == "cudnn":
            raise NotImplementedError("no cuDNN here")
        return real(*args, implementation=implementation, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    attention.attend(*_qkv(jnp.bfloat16))
    assert calls == ["cudnn", None]
    calls.clear()
    attention.attend(*_qkv(jnp.float32))  # fp32 never goes to cuDNN
    assert calls == [None]


def _abstract_mesh(platform: str, kind: str):
    from jax._src.mesh import AbstractDevice, AbstractMesh
    return AbstractMesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                        abstract_device=AbstractDevice(kind, None, platform))


def test_the_mesh_compiled_for_chooses_the_kernel_not_the_host(monkeypatch):
    """Tracing on this CPU host for an H100 mesh asks for cuDNN; for a CPU mesh it does not."""
    calls = []
    real = jax.nn.dot_product_attention

    def fake(*args, implementation=None, **kwargs):
        calls.append(implementation)
        return real(*args, implementation=None if implementation == "cudnn" else implementation, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    q, k, v = _qkv(jnp.bfloat16)
    for platform, kind, expected in (("gpu", "NVIDIA H100 80GB HBM3", "cudnn"), ("cuda", "NVIDIA H100", "cudnn"),
                                     ("cpu", "cpu", None), ("tpu", "TPU v5p", None)):
        calls.clear()
        with jax.sharding.use_abstract_mesh(_abstract_mesh(platform, kind)):
            jax.jit(attention.attend).trace(q, k, v)
        assert calls == [expected], (platform, calls)
    assert attention.target_platform() == "cpu"  # outside any mesh: this host's backend
