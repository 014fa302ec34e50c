"""Grouped-query self-attention with segment masking and a static-shape KV cache.

One masking rule covers right padding, left padding and sequence packing: a query attends to the
keys of its own segment (`segment_ids`, 0 = padding) at the same or an earlier slot. Padding
queries attend to earlier padding, so no softmax row is empty and nothing becomes NaN; real tokens
never see padding because its segment differs.

The rule travels to `attend` as `Segments` (segment ids, not a mask), and each kernel receives it
in its own form: XLA the dense mask, cuDNN causal + row lengths (or a bias where rows are packed),
Pallas splash attention the segment ids themselves.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from tgg_jax.models.rope import apply_rotary
from tgg_jax.sharding import constrain, logical_to_spec, param_init

# HF Qwen2's initializer_range: N(0, 0.02) for every Linear and Embedding.
INIT_STD = 0.02


def linear(in_features: int, out_features: int, names: Sequence[str], *, use_bias: bool,
           dtype, param_dtype, rngs: nnx.Rngs, std: float = INIT_STD) -> nnx.Linear:
    """nnx.Linear (kernel [in, out], N(0, std)) with logical axis names `names` = (in_axis, out_axis)."""
    return nnx.Linear(
        in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=param_init(nnx.initializers.normal(std), names),
        bias_init=param_init(nnx.initializers.zeros_init(), names[1:]), rngs=rngs)


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer, in fixed-size buffers written at `index`.

    k, v: one [batch, max_len, num_kv_heads, head_dim] array per layer (rotary already applied).
    segment_ids: [batch, max_len] int32, the segment of each written slot (0 = padding / empty).
    index: [] int32, the next slot to write; the same for every row (prompts are left-padded).
    """
    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    index: jax.Array

    @classmethod
    def init(cls, num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int,
             dtype=jnp.float32) -> KVCache:
        """An empty cache (all slots segment 0, index 0)."""
        zeros = lambda: jnp.zeros((batch, max_len, num_kv_heads, head_dim), dtype)  # noqa: E731
        return cls(k=tuple(zeros() for _ in range(num_layers)),
                   v=tuple(zeros() for _ in range(num_layers)),
                   segment_ids=jnp.zeros((batch, max_len), jnp.int32),
                   index=jnp.zeros((), jnp.int32))

    @property
    def max_len(self) -> int:
        return self.segment_ids.shape[1]


def target_platform() -> str:
    """"gpu", "tpu" or "cpu": the platform of the mesh being compiled for (jax.set_mesh, also an
    ahead-of-time topology's), else the default backend. A step compiled on a CPU host for an
    H100 mesh must choose the H100's kernels, not the host's."""
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    platform = device.platform if device is not None and device.platform else jax.default_backend()
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                   q_offset: jax.Array | int = 0) -> jax.Array:
    """Which keys each query may see: [B, T] x [B, S] -> bool [B, 1, T, S].

    Query t sits at slot q_offset + t, key s at slot s; a query sees keys of its own segment at the
    same or an earlier slot. Within a segment positions grow with slots, so this is causal by position.
    """
    q_slot = q_offset + jnp.arange(q_segment_ids.shape[1])
    kv_slot = jnp.arange(kv_segment_ids.shape[1])
    causal = kv_slot[None, :] <= q_slot[:, None]
    same_segment = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    return (same_segment & causal[None])[:, None]


@flax.struct.dataclass
class Segments:
    """Who attends to whom (see the module docstring), as segment ids.

    q: [B, T] int32, the queries' segments. kv: [B, S] int32, the keys' segments, and q_offset: []
    int32, the slot of query 0 among the keys (a KV cache's index); both None for self-attention
    over the same T tokens, the only case the fused training kernels take.
    """
    q: jax.Array
    kv: jax.Array | None = None
    q_offset: jax.Array | None = None

    @property
    def self_attention(self) -> bool:
        return self.kv is None and self.q_offset is None

    def mask(self) -> jax.Array:
        """The dense bool [B, 1, T, S] mask of `attention_mask`."""
        kv = self.q if self.kv is None else self.kv
        return attention_mask(self.q, kv, 0 if self.q_offset is None else self.q_offset)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | Segments | None = None,
           scale: float | None = None) -> jax.Array:
    """Dot-product attention with the kernel of the platform the step is compiled for
    (`target_platform`): q [B, T, N, H], k/v [B, S, K, H] (K divides N: GQA) -> [B, T, N, H].

    `mask` is `Segments` or a bool mask broadcastable to [B, N, T, S] (or None: no mask).
    - TPU, self-attention `Segments`: Pallas splash attention (`splash_attention`).
    - GPU, bf16/fp16: cuDNN's fused attention (`cudnn_attention` for `Segments`; a bool mask
      becomes cuDNN's bias). JAX never picks cuDNN by itself, and checks it against the local GPU
      while tracing: on a host without one (an ahead-of-time compile) that raises, and this
      falls back to XLA, as it does for shapes cuDNN refuses.
    - Elsewhere (CPU; the KV cache on TPU; a plain mask on TPU): XLA with the dense mask.
    """
    platform = target_platform()
    segments = mask if isinstance(mask, Segments) else None
    if platform == "tpu" and segments is not None and segments.self_attention:
        return splash_attention(q, k, v, segments.q, scale=scale)
    if platform == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
        try:
            if segments is not None:
                return cudnn_attention(q, k, v, segments, scale=scale)
            return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError, TypeError):
            pass  # no cuDNN on this host, or shapes and masks this cuDNN build does not support
    if segments is not None:
        mask = segments.mask()
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=None)


# cuDNN 9.10: what an ahead-of-time GPU compile assumes the GPU machine's cuDNN to be. In JAX 0.10
# the version only gates Blackwell (10.3) and multi-head latent attention, neither of which is used here.
AOT_CUDNN_VERSION = 91000


@contextlib.contextmanager
def assume_cudnn(version: int = AOT_CUDNN_VERSION):
    """Let cuDNN's fused attention be traced on a host without a GPU, for an ahead-of-time compile
    for a GPU topology: JAX 0.10 asks the local libcudnn for its version while tracing
    (`fused_attention_stablehlo.check_cudnn_version`), which raises without one, and `attend`
    would compile XLA's attention instead of what runs on the GPU. Inside this context that
    question answers `version` where the local probe fails (a real GPU's answer stands). On such
    a host JAX's compute-capability checks answer "not Hopper" (head dim <= 128), so it accepts no
    more than an H100 does. A no-op where a JAX release has moved the check."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa
    real = getattr(cudnn_fa, "check_cudnn_version", None)
    if real is None:
        yield
        return

    def check_cudnn_version():
        try:
            return real()
        except RuntimeError:  # "cuDNN is not detected." / "cuDNN not found."
            return version

    cudnn_fa.check_cudnn_version = check_cudnn_version
    try:
        yield
    finally:
        cudnn_fa.check_cudnn_version = real


def unpacked_lengths(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, T] segment ids -> (each row's count of non-padding tokens [B] int32, whether every row
    is one segment from slot 0 followed only by padding [] bool: right-padded and unpacked)."""
    lengths = jnp.sum(segment_ids != 0, axis=1, dtype=jnp.int32)
    in_prefix = jnp.arange(segment_ids.shape[1])[None, :] < lengths[:, None]
    one_segment = jnp.where(in_prefix, segment_ids == segment_ids[:, :1], segment_ids == 0)
    return lengths, jnp.all(one_segment) & jnp.all(lengths > 0)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: Segments, *,
                    scale: float | None = None, implementation: str = "cudnn") -> jax.Array:
    """`Segments` in the forms cuDNN's fused attention takes (JAX 0.10: `is_causal`, per-row
    lengths or a bias; segment ids only through the private, Hopper-only packed-offsets layout).

    Self-attention picks at run time (one scalar, `unpacked_lengths`):
    - every row one right-padded segment: `is_causal` + query/key lengths, cuDNN's
      PADDING_CAUSAL mask, which needs no [B, 1, T, S] tensor. Queries past a row's length
      attend nowhere there; their output is set to 0, as XLA's lengths path does (what cuDNN
      writes in those rows is unspecified);
    - otherwise (packed rows, left padding, a row of padding only): `is_causal` + the
      same-segment mask, which JAX turns into a [B, 1, T, S] bias (plus its gradient in the
      backward pass); the causal half still lets cuDNN skip the blocks above the diagonal.
    Each device decides for its own rows (`per_shard`).
    With a KV cache (left-padded prompts, queries at an offset) the dense mask of `Segments.mask`:
    cuDNN's lengths count from slot 0 and its causal mask from query 0, neither of which holds
    there. `implementation="xla"` runs the same formulations through XLA (the CPU tests do).
    """
    dpa = functools.partial(jax.nn.dot_product_attention, scale=scale, implementation=implementation)
    if not segments.self_attention:
        return dpa(q, k, v, mask=segments.mask())

    def local(q, k, v, segment_ids):
        lengths, unpacked = unpacked_lengths(segment_ids)

        def by_lengths(q, k, v):
            out = dpa(q, k, v, is_causal=True, query_seq_lengths=lengths, key_value_seq_lengths=lengths)
            return jnp.where((segment_ids != 0)[:, :, None, None], out, jnp.zeros((), out.dtype))

        def by_bias(q, k, v):
            same_segment = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
            return dpa(q, k, v, mask=same_segment, is_causal=True)

        return jax.lax.cond(unpacked, by_lengths, by_bias, q, k, v)

    # Per shard: each device decides for its own rows, and the branches' residuals stay local
    # (under automatic partitioning lax.cond's residuals come out replicated: all-gathered).
    return per_shard(local, q, k, v, segments.q, heads_axis=2)


def per_shard(fn, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, heads_axis: int):
    """fn(q, k, v, segment_ids) on each device's block under a mesh (shard_map: batch over the
    "batch" mesh axes, heads over "act_heads" / "act_kv_heads", sequence and head dim whole),
    or on the whole arrays without one. q/k/v [B, T, N, H] (heads_axis=2) or [B, N, T, H] (1)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return fn(q, k, v, segment_ids)
    qo, kv = (logical_to_spec(("batch", heads, None, None) if heads_axis == 1 else ("batch", None, heads, None))
              for heads in ("act_heads", "act_kv_heads"))
    return jax.shard_map(fn, in_specs=(qo, kv, kv, logical_to_spec(("batch", None))), out_specs=qo,
                         check_vma=False)(q, k, v, segment_ids)


# Splash attention's tiles: multiples of 128 (the TPU's lanes); 512 as in MaxText's defaults.
SPLASH_BLOCKS = (512, 256, 128)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                     scale: float | None = None, interpret: bool = False) -> jax.Array:
    """Causal self-attention within segments by the Pallas TPU splash attention kernel:
    q [B, T, N, H], k/v [B, T, K, H] (GQA natively: query head n reads key head n // (N / K)),
    segment_ids [B, T] -> [B, T, N, H].

    T is padded up to a multiple of 128 with segment id -1: real tokens never see the pad (a
    different segment, and later), pad queries see earlier pad, and the pad is sliced off. The
    tile is the largest of SPLASH_BLOCKS dividing the padded length. Under a mesh the kernel runs
    per shard (shard_map: batch over the "batch" axes, heads over "act_heads"); the sequence is
    not split. `interpret=True` runs the kernel in Pallas' interpreter (CPU tests).

    With bf16 inputs the kernels do not compile under jax_default_matmul_precision="highest"
    (Mosaic: "Bad lhs type" for a bf16 matmul at fp32 contract precision); the backward kernel is
    traced outside this function, so the setting cannot be undone here.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    b, t, n, h = q.shape
    scale = h ** -0.5 if scale is None else scale
    pad = -t % SPLASH_BLOCKS[-1]
    if pad:
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, pad)), constant_values=-1)
    length = t + pad
    block = next(size for size in SPLASH_BLOCKS if length % size == 0)
    blocks = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                               block_kv_dkv=block, block_kv_dkv_compute=block, use_fused_bwd_kernel=True)
    # The kernel does not scale the logits; [B, T, N, H] -> its [B, N, T, H] layout.
    q = (q * scale).astype(q.dtype)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))

    def local(q, k, v, segment_ids):
        heads = q.shape[1]
        kernel = splash.make_splash_mha(splash.MultiHeadMask([splash.CausalMask((length, length))] * heads),
                                        head_shards=1, q_seq_shards=1, block_sizes=blocks, interpret=interpret)
        return jax.vmap(kernel)(q, k, v, splash.SegmentIds(q=segment_ids, kv=segment_ids))

    return per_shard(local, q, k, v, segment_ids, heads_axis=1).transpose(0, 2, 1, 3)[:, :t]


def write_cache(buffer: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """Write new [B, T, K, H] into buffer [B, S, K, H] at slots index..index+T (static shapes)."""
    buffer = jax.lax.dynamic_update_slice(buffer, new.astype(buffer.dtype), (0, index, 0, 0))
    return constrain(buffer, ("cache_batch", "cache_seq", "cache_kv_heads", "head_dim"))


class Attention(nnx.Module):
    """GQA self-attention: biased q/k/v projections, rotary, unbiased output projection (HF Qwen2)."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
                 dtype, param_dtype, rngs: nnx.Rngs, init_std: float = INIT_STD):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, std=init_std)
        self.q_proj = linear(hidden_size, num_heads * head_dim, ("embed", "q_heads"), use_bias=True, **kw)
        self.k_proj = linear(hidden_size, num_kv_heads * head_dim, ("embed", "kv_heads"), use_bias=True, **kw)
        self.v_proj = linear(hidden_size, num_kv_heads * head_dim, ("embed", "kv_heads"), use_bias=True, **kw)
        self.o_proj = linear(num_heads * head_dim, hidden_size, ("q_heads", "embed"), use_bias=False, **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: Segments | jax.Array,
                 kv: tuple[jax.Array, jax.Array] | None = None, index: jax.Array | None = None):
        """x [B, T, D], rotary tables [B, T, head_dim], mask `Segments` or bool [B, 1, T, S]
        -> ([B, T, D], kv).

        Without a cache S = T. With one, kv = this layer's (k, v) buffers [B, S=max_len, K, H]:
        the T new keys/values are written at `index` and the queries attend over the whole buffer.
        """
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = constrain(apply_rotary(q, cos, sin), ("batch", "seq", "act_heads", "head_dim"))
        k = constrain(apply_rotary(k, cos, sin), ("batch", "seq", "act_kv_heads", "head_dim"))
        v = constrain(v, ("batch", "seq", "act_kv_heads", "head_dim"))
        if kv is not None:
            kv = (write_cache(kv[0], k, index), write_cache(kv[1], v, index))
            k, v = kv[0].astype(q.dtype), kv[1].astype(q.dtype)
        out = attend(q, k, v, mask=mask)
        out = constrain(out, ("batch", "seq", "act_heads", "head_dim"))
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)), kv
