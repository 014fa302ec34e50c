"""Qwen2 decoder against Hugging Face's Qwen2ForCausalLM (PyTorch, float32, eager attention).

Every reference is a tiny HF model built offline from a config, with its zero-initialised biases
and unit norms randomised so that a wrong mapping of either would show.
"""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P

from tests.models.vision_testing import per_layer_params
from tgg_jax import sharding
from tgg_jax.convert.mapping import export_tensors, import_tensors, load_into
from tgg_jax.convert.qwen2_map import QWEN2_TABLE, qwen2_table
from tgg_jax.models import qwen2, stacked
from tgg_jax.models.naming import tgg_name
from tgg_jax.models.qwen2 import Qwen2, Qwen2Config

VOCAB = 320


def build_hf(cfg: Qwen2Config, seed: int = 0) -> transformers.Qwen2ForCausalLM:
    """A random float32 HF model with nonzero q/k/v biases and non-unit norm weights."""
    torch.manual_seed(seed)
    hf_config = transformers.Qwen2Config(**cfg.to_hf_dict(), initializer_range=0.1,
                                         attn_implementation="eager")
    model = transformers.Qwen2ForCausalLM(hf_config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.5)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def hf_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}


def tgg_from_hf(hf_model, cfg: Qwen2Config) -> Qwen2:
    model = Qwen2(cfg, rngs=nnx.Rngs(1))
    load_into(model, import_tensors(hf_state(hf_model).__getitem__, qwen2_table(cfg), cfg.num_layers))
    return model


def hf_logits(hf_model, ids) -> np.ndarray:
    with torch.no_grad():
        return hf_model(torch.tensor(np.asarray(ids)[None], dtype=torch.long)).logits[0].numpy()


@nnx.jit
def forward(model, ids, positions, segment_ids):
    return model(ids, positions=positions, segment_ids=segment_ids)[0]


@nnx.jit
def step(model, ids, positions, segment_ids, cache):
    return model(ids, positions=positions, segment_ids=segment_ids, cache=cache)


@functools.cache
def reference_pair(tied: bool, scan: bool = False):
    """(config, HF model, tgg model with the HF weights), built once per module run."""
    cfg = qwen2.tiny(num_layers=2, vocab_size=VOCAB, tie_word_embeddings=tied, scan_layers=scan)
    hf = build_hf(cfg)
    return cfg, hf, tgg_from_hf(hf, cfg)


# "scanned": layers stacked and run by one jax.lax.scan (decoding: layer by layer).
@pytest.fixture(params=[(False, False), (True, False), (True, True)], ids=["untied", "tied", "scanned"])
def pair(request):
    return reference_pair(*request.param)


def tokens(shape, seed=0):
    return np.random.RandomState(seed).randint(0, VOCAB, shape).astype(np.int32)


def test_logits_match_hf(pair):
    cfg, hf, model = pair
    assert cfg.num_kv_heads < cfg.num_heads  # grouped-query attention
    assert float(hf.model.layers[0].self_attn.k_proj.bias.detach().abs().min()) > 0
    assert (model.lm_head is None) == cfg.tie_word_embeddings
    ids = tokens((2, 11))
    positions = np.broadcast_to(np.arange(11), ids.shape)
    logits = forward(model, ids, positions, np.ones_like(ids))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 11, VOCAB)
    for b in range(2):
        ref = hf_logits(hf, ids[b])
        assert np.abs(ref).max() > 1.0  # a scale at which a 1e-4 agreement means something
        np.testing.assert_allclose(np.asarray(logits[b]), ref, atol=1e-4, rtol=0)


def test_right_padding_and_packing_match_each_sequence_alone(pair):
    cfg, hf, model = pair
    a, b, c = tokens(5, seed=1), tokens(9, seed=2), tokens(4, seed=3)
    pad = tokens(4, seed=4)  # random ids in the padding: they must not matter
    ids = np.stack([np.concatenate([a, pad]), b, np.concatenate([c, a[:3], pad[:2]])])
    segment_ids = np.array([[1] * 5 + [0] * 4, [1] * 9, [1] * 4 + [2] * 3 + [0] * 2])
    positions = np.array([list(range(5)) + [0] * 4, list(range(9)), list(range(4)) + list(range(3)) + [0, 0]])
    logits = np.asarray(forward(model, ids, positions, segment_ids))
    assert np.isfinite(logits).all()  # padding rows included
    np.testing.assert_allclose(logits[0, :5], hf_logits(hf, a), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[1], hf_logits(hf, b), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[2, :4], hf_logits(hf, c), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[2, 4:7], hf_logits(hf, a[:3]), atol=1e-4, rtol=0)


def test_kv_cache_decoding_with_left_padding_matches_full_forward(pair):
    cfg, hf, model = pair
    short, long_ = tokens(4, seed=5), tokens(7, seed=6)
    new = tokens((2, 3), seed=7)  # one token per decode step and row
    pads = 3
    ids = np.stack([np.concatenate([tokens(pads, seed=8), short]), long_])
    segment_ids = np.array([[0] * pads + [1] * 4, [1] * 7])
    positions = np.array([[0] * pads + list(range(4)), list(range(7))])
    cache = model.init_cache(batch=2, max_len=12)
    # Prefill in two chunks, then three one-token decode steps, all through the jitted step.
    logits1, cache = step(model, ids[:, :5], positions[:, :5], segment_ids[:, :5], cache)
    logits2, cache = step(model, ids[:, 5:], positions[:, 5:], segment_ids[:, 5:], cache)
    outs = [np.concatenate([logits1, logits2], axis=1)]
    next_pos = positions[:, -1] + 1
    for t in range(3):
        logits, cache = step(model, new[:, t:t + 1], (next_pos + t)[:, None], np.ones((2, 1), np.int32), cache)
        outs.append(np.asarray(logits))
    assert int(cache.index) == 10 and cache.k[0].shape == (2, 12, cfg.num_kv_heads, cfg.head_dim)
    outs = np.concatenate(outs, axis=1)  # [2, 10, V]
    assert np.isfinite(outs).all()
    np.testing.assert_allclose(outs[0, pads:], hf_logits(hf, np.concatenate([short, new[0]])), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outs[1], hf_logits(hf, np.concatenate([long_, new[1]])), atol=1e-4, rtol=0)


def test_cache_overflow_is_an_error(pair):
    _, _, model = pair
    cache = model.init_cache(batch=1, max_len=4)
    ids = tokens((1, 5))
    with pytest.raises(ValueError, match="overflow"):
        model(ids, positions=np.arange(5)[None], segment_ids=np.ones_like(ids), cache=cache)


def test_exactly_one_input(pair):
    _, _, model = pair
    ids = tokens((1, 3))
    kw = dict(positions=np.arange(3)[None], segment_ids=np.ones_like(ids))
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=model.embed(ids), **kw)
    with pytest.raises(ValueError, match="exactly one"):
        model(**kw)


def test_inputs_embeds_equal_input_ids(pair):
    _, hf, model = pair
    ids = tokens((1, 6), seed=9)
    kw = dict(positions=np.arange(6)[None], segment_ids=np.ones_like(ids))
    logits = nnx.jit(lambda m, e: m(inputs_embeds=e, **kw)[0])(model, model.embed(ids))
    np.testing.assert_allclose(np.asarray(logits[0]), hf_logits(hf, ids[0]), atol=1e-4, rtol=0)


def test_bf16_compute_close_to_fp32(pair):
    cfg, hf, model32 = pair
    model16 = tgg_from_hf(hf, dataclasses.replace(cfg, dtype="bfloat16"))
    assert model16.embed_tokens.embedding[...].dtype == jnp.float32  # fp32 master weights
    ids = tokens((2, 10), seed=10)
    kw = dict(positions=np.broadcast_to(np.arange(10), ids.shape), segment_ids=np.ones_like(ids))
    hidden, _ = jax.eval_shape(lambda: model16.hidden_states(ids, **kw))
    assert hidden.dtype == jnp.bfloat16
    logits16 = np.asarray(forward(model16, ids, kw["positions"], kw["segment_ids"]))
    logits32 = np.asarray(forward(model32, ids, kw["positions"], kw["segment_ids"]))
    assert logits16.dtype == np.float32
    scale = np.abs(logits32).max()
    err = np.abs(logits16 - logits32).max()
    assert 0 < err < 0.05 * scale, (err, scale)  # bf16 really ran (err > 0) and stays close


def test_import_export_round_trip_is_bit_exact(pair):
    cfg, hf, model = pair
    sd = hf_state(hf)
    exported = dict(export_tensors(per_layer_params(model).__getitem__, qwen2_table(cfg), cfg.num_layers))
    expected = set(sd) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    assert set(exported) == expected
    for name, array in exported.items():
        assert array.dtype == sd[name].dtype and np.array_equal(array, sd[name]), name
    assert len(QWEN2_TABLE) == 15


@pytest.mark.parametrize("preset", ["qwen2p5_1p5b", "qwen2p5_3b", "qwen2p5_7b"])
def test_parameter_count_matches_hf(preset):
    cfg = getattr(qwen2, preset)()
    abstract = nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0)))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    with torch.device("meta"):
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg.to_hf_dict()))
    assert ours == sum(p.numel() for p in hf.parameters())  # parameters() counts a tied table once


def test_sharded_forward_matches_single_device(pair):
    cfg, _, model = pair
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, state = nnx.split(model)
    shardings = sharding.state_shardings(state, mesh)
    sharded_state = jax.device_put(state, shardings)
    layers = sharded_state["layers"]
    # ("embed", "q_heads") under the rules; a stacked tensor's layers axis is replicated.
    lead = (None,) if cfg.scan_layers else ()
    kernel = (layers if cfg.scan_layers else layers[0])["self_attn"]["q_proj"]["kernel"].get_value()
    assert kernel.sharding.spec == P(*lead, "fsdp", "tensor")
    down = (layers if cfg.scan_layers else layers[1])["mlp"]["down_proj"]["kernel"].get_value()
    assert down.sharding.spec == P(*lead, "tensor", "fsdp")
    ids = tokens((4, 8), seed=11)
    positions = np.broadcast_to(np.arange(8), ids.shape)
    segment_ids = np.array([[1] * 8, [1] * 5 + [0] * 3, [1] * 3 + [2] * 5, [1] * 8])

    @jax.jit
    def sharded_forward(state, ids, positions, segment_ids):
        return nnx.merge(graphdef, state)(ids, positions=positions, segment_ids=segment_ids)[0]

    with jax.set_mesh(mesh):
        logits = sharded_forward(sharded_state, ids, positions, segment_ids)
    assert len(logits.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(logits), np.asarray(forward(model, ids, positions, segment_ids)),
                               atol=1e-5, rtol=0)


def _loss_and_grads(cfg, hf):
    model = tgg_from_hf(hf, cfg)
    ids = tokens((2, 8), seed=12)
    positions = np.broadcast_to(np.arange(8), ids.shape)
    segment_ids = np.array([[1] * 8, [1] * 6 + [0] * 2])

    def loss_fn(model):
        logits, _ = model(ids[:, :-1], positions=positions[:, :-1], segment_ids=segment_ids[:, :-1])
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], axis=-1)[..., 0]
        weights = segment_ids[:, 1:] > 0
        return (nll * weights).sum() / weights.sum()

    grads = nnx.jit(nnx.grad(loss_fn))(model)
    jaxpr = str(jax.make_jaxpr(lambda s: loss_fn(nnx.merge(nnx.graphdef(model), s)))(nnx.state(model)))
    return grads, jaxpr


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_remat_policies_give_the_same_gradient(scan):
    cfg, hf, _ = reference_pair(tied=False)
    cfg = dataclasses.replace(cfg, scan_layers=scan)
    ref, jaxpr = _loss_and_grads(cfg, hf)
    assert "remat" not in jaxpr and "checkpoint" not in jaxpr
    assert ("scan[" in jaxpr) == scan  # one scan over the stacked layers, or none
    assert "attn_out" in jaxpr and "mlp_out" in jaxpr  # the names save_attn_mlp_out keeps
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(ref))  # padding rows give no NaN either
    for policy in ["full", "dots", "save_attn_mlp_out"]:
        grads, jaxpr = _loss_and_grads(dataclasses.replace(cfg, remat_policy=policy), hf)
        assert "checkpoint" in jaxpr or "remat" in jaxpr, policy  # the layers really are rematerialised
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads, ref)


def test_scanned_gradient_is_the_per_layer_one_stacked():
    cfg, hf, _ = reference_pair(tied=False)
    per_layer, _ = _loss_and_grads(cfg, hf)
    scanned, _ = _loss_and_grads(dataclasses.replace(cfg, scan_layers=True, remat_policy="full"), hf)
    want = stacked.relayout({"llm": nnx.to_pure_dict(per_layer)}, {"llm": True})["llm"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 nnx.to_pure_dict(scanned), want)


def test_config_round_trips_through_transformers():
    cfg = qwen2.qwen2p5_7b()
    hf_dict = transformers.Qwen2Config(**cfg.to_hf_dict()).to_dict()
    assert Qwen2Config.from_hf(hf_dict, scan_layers=True) == cfg
    # A config.json in the older layout (rope_theta at top level, no head_dim) reads the same.
    legacy = {k: v for k, v in hf_dict.items() if k not in ("rope_parameters", "head_dim")}
    assert Qwen2Config.from_hf({**legacy, "rope_theta": 1e6}, scan_layers=True) == cfg
    assert Qwen2Config.from_hf(hf_dict, dtype="bfloat16").compute_dtype == jnp.bfloat16


def test_from_hf_rejects_other_models(tmp_path):
    llama = {"model_type": "llama", "hidden_size": 64}
    with pytest.raises(ValueError, match="expected a Qwen2 config.*'llama'"):
        Qwen2Config.from_hf(llama)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(llama))
    with pytest.raises(ValueError, match=str(path)):
        Qwen2Config.from_hf_file(str(path))
    with pytest.raises(ValueError, match="missing"):
        Qwen2Config.from_hf({"model_type": "qwen2", "hidden_size": 64})


def test_presets_match_spec_table():
    rows = {"qwen2p5_1p5b": (28, 1536, 12, 2, 8960, 151936, True),
            "qwen2p5_3b": (36, 2048, 16, 2, 11008, 151936, True),
            "qwen2p5_7b": (28, 3584, 28, 4, 18944, 152064, False)}
    for name, row in rows.items():
        c = getattr(qwen2, name)()
        assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size,
                c.vocab_size, c.tie_word_embeddings) == row, name
        assert (c.rope_theta, c.rms_norm_eps, c.head_dim) == (1e6, 1e-6, c.hidden_size // c.num_heads)
