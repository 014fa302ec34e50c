"""Dinov2Tower against transformers' Dinov2Model (tiny random weights, float32, eager attention)."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import PartitionSpec as P

from tests.models.vision_testing import (abstract, check_scanned_tower, cls_patch_features, hidden_states, images,
                                         param_count, params_by_name, patch_features, randomize, saved_tensors)
from tgg_jax import sharding
from tgg_jax.convert.dinov2_map import DINOV2_TABLE, dinov2_table
from tgg_jax.convert.mapping import export_tensors, import_tensors, load_into
from tgg_jax.models import dinov2
from tgg_jax.models.dinov2 import Dinov2Config, Dinov2Tower

# facebook/dinov2-large's config.json (the keys that shape the model).
OFFICIAL_LARGE = {"model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": 1024,
                  "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4, "hidden_act": "gelu",
                  "image_size": 518, "patch_size": 14, "num_channels": 3, "layer_norm_eps": 1e-06,
                  "layerscale_value": 1.0, "qkv_bias": True, "use_swiglu_ffn": False,
                  "drop_path_rate": 0.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture(scope="module")
def hf_dinov2():
    """A tiny random Dinov2Model trained at 98 px (7x7 position grid), random LayerScale."""
    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**dinov2.tiny().to_hf_dict())).eval()
    model.set_attn_implementation("eager")
    randomize(model, seed=0)
    return model


@pytest.fixture(scope="module")
def checkpoint(hf_dinov2, tmp_path_factory):
    """The tensors as save_pretrained writes them: the checkpoint names (attention.attention.query, ...)."""
    return saved_tensors(hf_dinov2, tmp_path_factory.mktemp("dinov2"))


def imported_tower(checkpoint) -> Dinov2Tower:
    tower = abstract(Dinov2Tower, dinov2.tiny())
    load_into(tower, import_tensors(checkpoint.__getitem__, DINOV2_TABLE, num_layers=3))
    return tower


@pytest.fixture(scope="module")
def tower(checkpoint):
    return imported_tower(checkpoint)


def hf_hidden_states(hf_dinov2, nchw):
    with torch.no_grad():
        return [h.numpy() for h in hf_dinov2(pixel_values=nchw, output_hidden_states=True).hidden_states]


# 98: the stored 7x7 grid as-is; 56 and 140: shrink to 4x4 / grow to 10x10; 70x112: non-square 5x8;
# 60: 4x4 patches with a remainder the conv drops.
@pytest.mark.parametrize("height,width", [(98, 98), (56, 56), (140, 140), (70, 112), (60, 60)])
def test_hidden_states_match_hf_at_every_layer(hf_dinov2, tower, height, width):
    nchw, nhwc = images(seed=height + width, batch=2, height=height, width=width)
    ref = hf_hidden_states(hf_dinov2, nchw)
    ours = hidden_states(tower, nhwc)
    assert len(ours) == len(ref) == 4  # embeddings + 3 layers
    tokens = 1 + (height // 14) * (width // 14)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape == (2, tokens, 64)
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4, rtol=0, err_msg=f"hidden_states[{i}]")


def test_features_are_penultimate_patches_and_skip_the_last_layer(hf_dinov2, checkpoint):
    tower = imported_tower(checkpoint)
    # Poison the last layer: features(select_layer=-2) must not run it.
    for var in params_by_name(tower.layers[-1]).values():
        var.set_value(np.full(var.get_value().shape, np.nan, np.float32))
    nchw, nhwc = images(seed=5, batch=2, height=56, width=56)
    ref = hf_hidden_states(hf_dinov2, nchw)[-2]
    patch = np.asarray(patch_features(tower, nhwc))
    assert patch.shape == (2, 16, 64)
    np.testing.assert_allclose(patch, ref[:, 1:], atol=1e-4, rtol=0)
    cls_patch = np.asarray(cls_patch_features(tower, nhwc))
    np.testing.assert_allclose(cls_patch, ref, atol=1e-4, rtol=0)
    assert len(tower(nhwc, num_layers_to_run=0)) == 1


def test_export_reproduces_every_hf_tensor_bit_exactly(checkpoint, tower):
    params = params_by_name(tower)
    exported = dict(export_tensors(lambda n: params[n].get_value(), DINOV2_TABLE, num_layers=3))
    assert set(exported) == set(checkpoint)
    for name, value in checkpoint.items():
        assert exported[name].dtype == value.dtype and exported[name].shape == value.shape, name
        assert np.array_equal(exported[name], value), name


def test_scanned_tower_matches_hf_and_exports_the_same_tensors(hf_dinov2, checkpoint):
    """Layers stacked and scanned: every hidden state (positions resized to a 5 x 8 grid) and
    the exported tensors are HF's, and the penultimate features scan the first layers only."""
    tower = abstract(Dinov2Tower, dinov2.tiny(scan_layers=True))
    nchw, nhwc = images(seed=6, batch=2, height=70, width=112)
    check_scanned_tower(tower, DINOV2_TABLE, checkpoint, set(checkpoint), hf_hidden_states(hf_dinov2, nchw), nhwc)


def test_without_mask_token_or_qkv_bias(tmp_path):
    cfg = dinov2.tiny(use_mask_token=False, qkv_bias=False)
    hf = transformers.Dinov2Model(transformers.Dinov2Config(**cfg.to_hf_dict())).eval()
    hf.set_attn_implementation("eager")
    randomize(hf, seed=3)
    tensors = saved_tensors(hf, tmp_path)
    tower = abstract(Dinov2Tower, cfg)
    load_into(tower, import_tensors(tensors.__getitem__, dinov2_table(use_mask_token=False, qkv_bias=False), 3))
    nchw, nhwc = images(seed=6, batch=1, height=56, width=56)
    np.testing.assert_allclose(np.asarray(hidden_states(tower, nhwc)[-1]), hf_hidden_states(hf, nchw)[-1], atol=1e-4, rtol=0)


def test_sharded_forward_matches_hf(hf_dinov2, tower):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, state = nnx.split(tower)
    state = jax.device_put(state, sharding.state_shardings(state, mesh))
    assert state["layers"][0]["attention"]["q_proj"]["kernel"].get_value().sharding.spec == P("fsdp", "tensor")
    assert state["layers"][0]["mlp"]["fc2"]["kernel"].get_value().sharding.spec == P("tensor", "fsdp")
    nchw, nhwc = images(seed=7, batch=4, height=56, width=56)

    @jax.jit
    def features(state, pixels):
        return nnx.merge(graphdef, state).features(pixels)

    with jax.set_mesh(mesh):
        out = features(state, nhwc)
    np.testing.assert_allclose(np.asarray(out), hf_hidden_states(hf_dinov2, nchw)[-2][:, 1:], atol=1e-4, rtol=0)


def test_from_hf():
    assert Dinov2Config.from_hf(OFFICIAL_LARGE, scan_layers=True) == dinov2.dinov2_large()
    assert Dinov2Config.from_hf(transformers.Dinov2Config(**dinov2.tiny().to_hf_dict()).to_dict()) == dinov2.tiny()


@pytest.mark.parametrize("model_type", ["clip_vision_model", "dinov2_with_registers", "vit", None])
def test_from_hf_rejects_other_model_types(model_type):
    with pytest.raises(ValueError, match="model_type"):
        Dinov2Config.from_hf({**OFFICIAL_LARGE, "model_type": model_type})


@pytest.mark.parametrize("change,message", [(dict(use_swiglu_ffn=True), "swiglu"),
                                            (dict(num_register_tokens=4), "register")])
def test_unsupported_variants_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        Dinov2Tower(dataclasses.replace(dinov2.tiny(), **change), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=message):
        Dinov2Config.from_hf({**OFFICIAL_LARGE, **change})


def test_parameter_count_of_large_matches_hf():
    large = abstract(Dinov2Tower, dinov2.dinov2_large())
    with torch.device("meta"):
        hf = transformers.Dinov2Model(transformers.Dinov2Config.from_dict(OFFICIAL_LARGE))
    assert param_count(large) == sum(p.numel() for p in hf.parameters()) == 304_368_640
