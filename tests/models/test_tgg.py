"""TinyGroundingGPT assembly: placeholder overwrite, presets' sizes vs the HF models, sharding."""

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P

from tests import hf_reference as ref
from tgg_jax import sharding
from tgg_jax.models import clip, dinov2, qwen2
from tgg_jax.models.tgg import PRESETS, TGGConfig, TinyGroundingGPT, count_params, overwrite_placeholders


def tiny_config(**kw) -> TGGConfig:
    return TGGConfig(llm=qwen2.tiny(vocab_size=ref.VOCAB), clip=clip.tiny(), dinov2=dinov2.tiny(),
                     image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID, **kw)


def test_overwrite_placeholders_in_order():
    embeds = np.zeros((1, 6, 2), np.float32)
    ids = np.array([[5, 9, 9, 5, 9, 5]])
    rows = np.array([[[1, 1], [2, 2], [3, 3]]], np.float32)
    out = np.asarray(overwrite_placeholders(embeds, ids, 9, rows))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 2, 0, 3, 0])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="fusion"):
        tiny_config(fusion="sum")
    with pytest.raises(ValueError, match="object_pool"):
        tiny_config(object_pool=3)
    with pytest.raises(ValueError, match="image_pool"):
        tiny_config(image_pool=3)


def test_image_pool_shortens_the_image_run():
    cfg = tiny_config(image_pool=2)
    assert (cfg.image_tokens, cfg.object_tokens) == (4, 16)
    model = TinyGroundingGPT(cfg, rngs=nnx.Rngs(0))
    images = np.random.default_rng(1).integers(0, 256, (1, 1, cfg.image_size, cfg.image_size, 3), np.uint8)
    ids = np.array([[5] + [cfg.image_token_id] * 4 + [6]])
    rows = model.projector(model._pool(model.visual_features(images[:, 0]), 2))
    embeds = np.asarray(model.embed_inputs(ids, images))
    np.testing.assert_allclose(embeds[0, 1:5], np.asarray(rows[0]), atol=1e-6)


def test_object_pool_averages_2x2_blocks():
    cfg = tiny_config(object_pool=2)
    assert (cfg.image_tokens, cfg.object_tokens) == (16, 4)
    model = TinyGroundingGPT(cfg, rngs=nnx.Rngs(0))
    feats = np.random.default_rng(0).normal(size=(1, 16, 3)).astype(np.float32)
    pooled = np.asarray(model._pool(feats, 2))
    grid = feats.reshape(4, 4, 3)
    expected = grid.reshape(2, 2, 2, 2, 3).mean(axis=(1, 3)).reshape(4, 3)
    np.testing.assert_allclose(pooled[0], expected, rtol=1e-6)


@pytest.mark.parametrize("size", [pytest.param("1.5b", marks=pytest.mark.slow),
                                  pytest.param("3b", marks=pytest.mark.slow), "7b"])
def test_preset_parameter_counts_match_hf(size):
    cfg = PRESETS[size]()
    counts = count_params(cfg)  # from shapes only
    hf_llm = {"1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
              "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
              "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)}[size]
    with torch.device("meta"):
        llm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**hf_llm))
        vit = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=336, patch_size=14, hidden_act="quick_gelu"))
        dino = transformers.Dinov2Model(transformers.Dinov2Config(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, image_size=518,
            patch_size=14))
        h = hf_llm["hidden_size"]
        proj = torch.nn.Sequential(torch.nn.Linear(2048, h), torch.nn.GELU(), torch.nn.Linear(h, h))

    def n(m):
        return sum(p.numel() for p in m.parameters())
    assert counts["llm"] == n(llm)
    assert counts["clip"] == n(vit)
    assert counts["dinov2"] == n(dino)
    assert counts["projector"] == n(proj)


def test_sharded_forward_equals_single_device():
    cfg = tiny_config()
    model = TinyGroundingGPT(cfg, rngs=nnx.Rngs(0))
    ids, images, objects = ref.example_inputs(batch=4)
    pos = np.tile(np.arange(ids.shape[1], dtype=np.int32), (4, 1))
    seg = np.ones_like(ids)

    @jax.jit
    def forward(state, ids, images, objects):
        m = nnx.merge(graphdef, state)
        return m(ids, positions=pos, segment_ids=seg, images=images, objects=objects)[0]

    graphdef, state = nnx.split(model)
    single = np.asarray(forward(state, ids, images, objects))

    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = sharding.state_shardings(nnx.state(nnx.eval_shape(lambda: TinyGroundingGPT(cfg, rngs=nnx.Rngs(0)))), mesh)
    sharded_state = jax.device_put(state, shardings)
    batch_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
    with jax.set_mesh(mesh):
        out = forward(sharded_state, *(jax.device_put(x, batch_sharding) for x in (ids, images, objects)))
    np.testing.assert_allclose(np.asarray(out), single, atol=1e-5)
    # The rules table decides placement: embed -> fsdp, heads / mlp -> tensor.
    q = sharded_state["llm"]["layers"][0]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == P("fsdp", "tensor")
    proj = sharded_state["projector"]["linear_1"]["kernel"]
    assert proj.sharding.spec == P("fsdp", "tensor")
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (32, 32)


def test_initializer_range_sets_the_llm_and_projector_init():
    """The tiny preset trains from scratch with a wider init than HF's 0.02 (configs/tiny.py):
    every LLM Linear/Embedding and the projector draw from N(0, initializer_range)."""
    from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT
    for std in (0.02, 0.05):
        cfg = TGGConfig(llm=qwen2.tiny(initializer_range=std), clip=clip.tiny(), dinov2=dinov2.tiny())
        model = TinyGroundingGPT(cfg, rngs=nnx.Rngs(0))
        for w in (model.llm.embed_tokens.embedding, model.llm.layers[0].self_attn.q_proj.kernel,
                  model.llm.layers[0].mlp.down_proj.kernel, model.projector.linear_1.kernel):
            assert abs(float(np.std(np.asarray(w[...]))) / std - 1) < 0.1
