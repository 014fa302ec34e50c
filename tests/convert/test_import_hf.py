"""`tgg-convert import-hf` on tiny random HF checkpoints saved offline: the imported model's
logits equal an independent PyTorch assembly of the same HF parts; bad inputs fail clearly."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from flax import nnx

from tests import hf_reference as ref
from tgg_jax.checkpoint import load_params
from tgg_jax.convert import cli
from tgg_jax.convert.hf_dir import CheckpointError
from tgg_jax.convert.import_hf import import_hf
from tgg_jax.models.tgg import TinyGroundingGPT


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def saved(request, tmp_path_factory):
    parts = ref.build_parts(tie=request.param)
    root = str(tmp_path_factory.mktemp("hf"))
    return parts, ref.save_parts(root, *parts)


def _model(params, config):
    model = TinyGroundingGPT(config, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    return model


def test_cli_import_matches_pytorch_assembly(saved, tmp_path):
    parts, dirs = saved
    out = str(tmp_path / "ckpt")
    assert cli.main(["import-hf", "--llm", dirs["llm"], "--clip", dirs["clip"], "--dinov2", dirs["dinov2"],
                     "--projector", dirs["projector"], "--image_token_id", str(ref.IMAGE_ID),
                     "--object_token_id", str(ref.OBJECT_ID), "--out", out]) == 0
    params, config = load_params(out)
    assert config.llm.tie_word_embeddings == parts[0].config.tie_word_embeddings
    model = _model(params, config)
    ids, images, objects = ref.example_inputs()
    pos = np.tile(np.arange(ids.shape[1], dtype=np.int32), (ids.shape[0], 1))
    logits, _ = model(ids, positions=pos, segment_ids=np.ones_like(ids), images=images, objects=objects)
    expected = ref.reference_logits(parts, ids, images, objects)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_fresh_projector_when_none_given(saved):
    _, dirs = saved
    params, config = import_hf(dirs["llm"], dirs["clip"], dirs["dinov2"], seed=3,
                               image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID)
    kernel = params["projector"]["linear_1"]["kernel"]
    assert kernel.shape == (config.visual_width, config.llm.hidden_size)
    assert np.std(kernel) > 0


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_missing_directory_and_config(saved, tmp_path):
    _, dirs = saved
    with pytest.raises(CheckpointError, match="not a directory"):
        import_hf(str(tmp_path / "nope"), dirs["clip"], dirs["dinov2"])
    llm = _copy(dirs["llm"], tmp_path / "llm")
    os.remove(os.path.join(llm, "config.json"))
    with pytest.raises(CheckpointError, match=r"llm/config.json: missing"):
        import_hf(llm, dirs["clip"], dirs["dinov2"])


def test_wrong_model_type_names_file(saved, tmp_path):
    _, dirs = saved
    with pytest.raises(CheckpointError, match=r"clip/config.json: model_type is 'clip_vision_model'"):
        import_hf(dirs["clip"], dirs["clip"], dirs["dinov2"])  # a CLIP directory given as the LLM


def test_wrong_architecture_names_file(saved, tmp_path):
    _, dirs = saved
    llm = _copy(dirs["llm"], tmp_path / "llm")
    cfg_file = os.path.join(llm, "config.json")
    cfg = json.load(open(cfg_file))
    cfg["architectures"] = ["Qwen2ForSequenceClassification"]
    json.dump(cfg, open(cfg_file, "w"))
    with pytest.raises(CheckpointError, match="architectures"):
        import_hf(llm, dirs["clip"], dirs["dinov2"])


def test_shape_mismatch_names_tensor(saved, tmp_path):
    _, dirs = saved
    llm = _copy(dirs["llm"], tmp_path / "llm")
    cfg_file = os.path.join(llm, "config.json")
    cfg = json.load(open(cfg_file))
    cfg["intermediate_size"] = 96  # config disagrees with the stored MLP weights
    json.dump(cfg, open(cfg_file, "w"))
    with pytest.raises(CheckpointError, match=r"shape mismatch for llm\.layers\.0\.mlp"):
        import_hf(llm, dirs["clip"], dirs["dinov2"])


def test_pickle_checkpoint_refused_never_opened(saved, tmp_path):
    _, dirs = saved
    llm = _copy(dirs["llm"], tmp_path / "llm")
    os.remove(os.path.join(llm, "model.safetensors"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, os.path.join(llm, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: pickle-based checkpoint refused"):
        import_hf(llm, dirs["clip"], dirs["dinov2"])
    assert not marker.exists()


def test_sharded_safetensors_with_index(saved, tmp_path):
    parts, dirs = saved
    llm_dir = str(tmp_path / "llm_sharded")
    parts[0].save_pretrained(llm_dir, max_shard_size="20KB")
    assert os.path.isfile(os.path.join(llm_dir, "model.safetensors.index.json"))
    a, _ = import_hf(dirs["llm"], dirs["clip"], dirs["dinov2"], projector=dirs["projector"],
                     image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID)
    b, _ = import_hf(llm_dir, dirs["clip"], dirs["dinov2"], projector=dirs["projector"],
                     image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID)
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
        np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
    import jax
    return jax.tree.leaves(tree)


def test_import_keeps_the_llms_tokenizer_for_export_and_predict(saved, tmp_path, capsys):
    """A Hugging Face LLM directory ships its tokenizer: import-hf keeps it (placeholders added)
    as CKPT/tokenizer, so export-hf and tgg-predict on the import need no --tokenizer."""
    import transformers

    from tests.convert.export_fixtures import placeholder_tokenizer
    from tgg_jax.predict import checkpoint_tokenizer

    _, dirs = saved
    llm = str(tmp_path / "llm")
    shutil.copytree(dirs["llm"], llm)
    placeholder_tokenizer().save(llm)  # as a downloaded model directory holds it
    out = str(tmp_path / "ckpt")
    args = ["import-hf", "--llm", llm, "--clip", dirs["clip"], "--dinov2", dirs["dinov2"],
            "--image_token_id", str(ref.IMAGE_ID), "--object_token_id", str(ref.OBJECT_ID)]
    assert cli.main([*args, "--out", out]) == 0
    assert os.path.isfile(os.path.join(out, "tokenizer", "tokenizer.json"))
    tok = checkpoint_tokenizer(out)
    assert (tok.image_id, tok.object_id) == (ref.IMAGE_ID, ref.OBJECT_ID)
    assert cli.main(["export-hf", "--checkpoint", out, "--out", str(tmp_path / "export")]) == 0
    exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export" / "llm"))
    assert exported.convert_tokens_to_ids(["<image>", "<object>"]) == [ref.IMAGE_ID, ref.OBJECT_ID]
    # Placeholder ids that disagree with the tokenizer stop the import before anything is written.
    assert cli.main(["import-hf", "--llm", llm, "--clip", dirs["clip"], "--dinov2", dirs["dinov2"],
                     "--image_token_id", "302", "--object_token_id", "303",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "places <image>/<object> at 300/301" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")
    assert cli.main(["export-hf", "--checkpoint", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "e2")]) == 2
