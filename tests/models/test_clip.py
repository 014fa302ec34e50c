"""CLIPVisionTower against transformers' CLIPVisionModel (tiny random weights, float32, eager attention)."""

import numpy as np
import pytest
import torch
import transformers

from tests.models.vision_testing import (abstract, check_scanned_tower, cls_patch_features, hidden_states, images,
                                         param_count, params_by_name, patch_features, randomize, saved_tensors)
from tgg_jax.convert.clip_map import CLIP_TABLE, strip_vision_prefix
from tgg_jax.convert.mapping import export_tensors, import_tensors, load_into
from tgg_jax.models import clip
from tgg_jax.models.clip import CLIPVisionConfig, CLIPVisionTower

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)

# vision_config of openai/clip-vit-large-patch14-336's config.json (the keys that shape the model).
OFFICIAL_L14_336 = {
    "model_type": "clip",
    "projection_dim": 768,
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336,
                      "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05,
                      "projection_dim": 768, "num_channels": 3},
}


@pytest.fixture(scope="module")
def hf_clip():
    """A tiny random CLIPModel: the official checkpoint's layout, vision tensors under vision_model."""
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=clip.tiny().to_hf_dict(), projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.set_attn_implementation("eager")
    randomize(model, seed=0)
    return model


@pytest.fixture(scope="module")
def checkpoint(hf_clip, tmp_path_factory):
    return saved_tensors(hf_clip, tmp_path_factory.mktemp("clip"))


def imported_tower(checkpoint) -> CLIPVisionTower:
    tower = abstract(CLIPVisionTower, clip.tiny())
    load_into(tower, import_tensors(checkpoint.__getitem__, CLIP_TABLE, num_layers=3))
    return tower


@pytest.fixture(scope="module")
def tower(checkpoint):
    return imported_tower(checkpoint)


def hf_hidden_states(hf_clip, nchw):
    with torch.no_grad():
        out = hf_clip.vision_model(pixel_values=nchw, output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


def test_hidden_states_match_hf_at_every_layer(hf_clip, tower):
    nchw, nhwc = images(seed=1, batch=2, height=56, width=56)
    ref = hf_hidden_states(hf_clip, nchw)
    ours = hidden_states(tower, nhwc)
    assert len(ours) == len(ref) == 4  # pre_layrnorm output + 3 layers
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape == (2, 17, 64)
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4, rtol=0, err_msg=f"hidden_states[{i}]")


def test_num_layers_to_run_stops_early(hf_clip, tower):
    nchw, nhwc = images(seed=2, batch=1, height=56, width=56)
    ref = hf_hidden_states(hf_clip, nchw)
    ours = tower(nhwc, num_layers_to_run=1)
    assert len(ours) == 2
    np.testing.assert_allclose(np.asarray(ours[1]), ref[1], atol=1e-4, rtol=0)


def test_features_are_penultimate_patches_and_skip_the_last_layer(hf_clip, checkpoint):
    tower = imported_tower(checkpoint)
    # Poison the last layer: features(select_layer=-2) must not run it.
    for var in params_by_name(tower.layers[-1]).values():
        var.set_value(np.full(var.get_value().shape, np.nan, np.float32))
    nchw, nhwc = images(seed=3, batch=2, height=56, width=56)
    ref = hf_hidden_states(hf_clip, nchw)[-2]
    patch = np.asarray(patch_features(tower, nhwc))
    assert patch.shape == (2, 16, 64)
    np.testing.assert_allclose(patch, ref[:, 1:], atol=1e-4, rtol=0)
    cls_patch = np.asarray(cls_patch_features(tower, nhwc))
    np.testing.assert_allclose(cls_patch, ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="select_layer"):
        tower.features(nhwc, select_layer=-5)
    with pytest.raises(ValueError, match="select_feature"):
        tower.features(nhwc, select_feature="cls")


def test_export_reproduces_every_hf_tensor_bit_exactly(checkpoint, tower):
    params = params_by_name(tower)
    exported = dict(export_tensors(lambda n: params[n].get_value(), CLIP_TABLE, num_layers=3))
    vision = {k: v for k, v in checkpoint.items() if k.startswith("vision_model.")}
    assert set(exported) == set(vision)
    for name, value in vision.items():
        assert exported[name].dtype == value.dtype and exported[name].shape == value.shape, name
        assert np.array_equal(exported[name], value), name


def test_scanned_tower_matches_hf_and_exports_the_same_tensors(hf_clip, checkpoint):
    """Layers stacked and scanned: every hidden state and the exported tensors are HF's, and the
    penultimate features scan the first layers only."""
    tower = abstract(CLIPVisionTower, clip.tiny(scan_layers=True))
    nchw, nhwc = images(seed=1, batch=2, height=56, width=56)
    vision = {k for k in checkpoint if k.startswith("vision_model.")}
    check_scanned_tower(tower, CLIP_TABLE, checkpoint, vision, hf_hidden_states(hf_clip, nchw), nhwc)


def test_table_reads_a_transformers5_clip_vision_model_file(hf_clip, tmp_path):
    # transformers 5 saves a bare CLIPVisionModel without the vision_model. prefix.
    bare = saved_tensors(hf_clip.vision_model, tmp_path)
    assert not any(k.startswith("vision_model.") for k in bare)
    tower = abstract(CLIPVisionTower, clip.tiny())
    load_into(tower, import_tensors(lambda n: bare[strip_vision_prefix(n)], CLIP_TABLE, num_layers=3))
    nchw, nhwc = images(seed=4, batch=1, height=56, width=56)
    np.testing.assert_allclose(np.asarray(hidden_states(tower, nhwc)[-1]), hf_hidden_states(hf_clip, nchw)[-1], atol=1e-4, rtol=0)


def test_rejects_other_image_sizes(tower):
    with pytest.raises(ValueError, match="56x56"):
        tower(np.zeros((1, 70, 70, 3), np.float32))
    with pytest.raises(ValueError, match="NHWC"):
        tower(np.zeros((1, 3, 56, 56), np.float32))


def test_from_hf_reads_vision_and_full_configs(hf_clip):
    full = hf_clip.config.to_dict()
    assert CLIPVisionConfig.from_hf(full) == clip.tiny()
    assert CLIPVisionConfig.from_hf(hf_clip.config.vision_config.to_dict()) == clip.tiny()
    assert CLIPVisionConfig.from_hf(OFFICIAL_L14_336, scan_layers=True) == clip.clip_vit_l14_336()
    assert CLIPVisionConfig.from_hf(clip.clip_vit_l14_336().to_hf_dict(), scan_layers=True) == clip.clip_vit_l14_336()


@pytest.mark.parametrize("model_type", ["dinov2", "siglip_vision_model", "clip_text_model", None])
def test_from_hf_rejects_other_model_types(model_type):
    with pytest.raises(ValueError, match="model_type"):
        CLIPVisionConfig.from_hf({"model_type": model_type, "hidden_size": 64})


def test_from_hf_rejects_a_clip_config_whose_vision_part_is_not_clip():
    with pytest.raises(ValueError, match="model_type"):
        CLIPVisionConfig.from_hf({"model_type": "clip", "vision_config": {"model_type": "siglip_vision_model"}})


def test_parameter_count_of_l14_336_matches_hf():
    large = abstract(CLIPVisionTower, clip.clip_vit_l14_336())
    with torch.device("meta"):
        hf = transformers.CLIPVisionModel(
            transformers.CLIPVisionConfig.from_dict(OFFICIAL_L14_336["vision_config"]))
    assert param_count(large) == sum(p.numel() for p in hf.parameters()) == 303_507_456
