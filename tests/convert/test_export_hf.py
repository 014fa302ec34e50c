"""`tgg-convert export-hf`: HF parts -> import-hf -> export-hf gives back every tensor bit for bit,
in directories transformers loads as is; trainer step dirs, checkpoints saved by two processes,
and bad inputs."""

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import weakref

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors import safe_open
from safetensors.torch import load_file

from tests import hf_reference as ref
from tests.convert.export_fixtures import import_then_export, placeholder_tokenizer
from tests.evals import fake_data
from tgg_jax import sharding
from tgg_jax.checkpoint import abstract_model, load_params, save_config, save_params
from tgg_jax.convert import cli
from tgg_jax.convert.checkpoint_reader import CheckpointReader
from tgg_jax.convert.export_hf import export_hf
from tgg_jax.convert.import_hf import import_hf
from tgg_jax.convert.mapping import IDENTITY, LINEAR
from tgg_jax.convert.safetensors_writer import Entry, write_safetensors
from tgg_jax.models import clip, dinov2, qwen2
from tgg_jax.models.tgg import TGGConfig, scanned_parts, with_scan_layers

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """Tied head, exported by the CLI with its defaults (layers stacked, one safetensors file
    per part)."""
    return import_then_export(str(tmp_path_factory.mktemp("tied")), tie=True)


@pytest.fixture(scope="module")
def untied_sharded(tmp_path_factory):
    """Untied head, layers stored one by one, exported in shards of at most 40 KB."""
    return import_then_export(str(tmp_path_factory.mktemp("untied")), tie=False, max_shard_bytes=40_000,
                              scan_layers=False)


@pytest.fixture(params=["tied", "untied_sharded"])
def exported(request):
    return request.getfixturevalue(request.param)


def read_dir(directory: str) -> dict[str, torch.Tensor]:
    """Every tensor of an HF directory, through its index when there is one."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return load_file(os.path.join(directory, "model.safetensors"))
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for shard in shards:
        out.update(load_file(os.path.join(directory, shard)))
    return out


def assert_same_tensors(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert torch.equal(got[name], want[name]), name


def test_every_tensor_comes_back_bit_exact(exported):
    llm, vit, dino, projector = exported.parts
    # What transformers itself saved for each part is the reference, names included.
    assert_same_tensors(read_dir(os.path.join(exported.out, "llm")), read_dir(exported.hf["llm"]))
    # CLIP keeps the official checkpoints' "vision_model." prefix (module docstring of export_hf).
    assert_same_tensors(read_dir(os.path.join(exported.out, "clip")),
                        {"vision_model." + k: v for k, v in read_dir(exported.hf["clip"]).items()})
    assert_same_tensors(read_dir(os.path.join(exported.out, "dinov2")), read_dir(exported.hf["dinov2"]))
    assert_same_tensors(load_file(os.path.join(exported.out, "projector.safetensors")),
                        {k: v.contiguous() for k, v in projector.state_dict().items()})
    assert ("lm_head.weight" in read_dir(os.path.join(exported.out, "llm"))) == (not llm.config.tie_word_embeddings)


def test_sharded_directory_has_a_complete_index(tied, untied_sharded):
    assert sorted(os.listdir(os.path.join(tied.out, "dinov2"))) == ["config.json", "model.safetensors"]
    llm_dir = os.path.join(untied_sharded.out, "llm")
    with open(os.path.join(llm_dir, "model.safetensors.index.json")) as f:
        index = json.load(f)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    total = 0
    for shard in shards:
        with safe_open(os.path.join(llm_dir, shard), framework="pt") as f:
            sizes = [f.get_tensor(name).numel() * 4 for name in f.keys()]
            assert all(index["weight_map"][name] == shard for name in f.keys())
        assert sum(sizes) <= 40_000 or len(sizes) == 1  # a larger tensor gets a shard of its own
        total += sum(sizes)
    assert index["metadata"]["total_size"] == total


def test_transformers_loads_every_part_as_is(exported):
    out = exported.out
    # Eager attention like the reference parts, so that equal weights give equal outputs.
    llm, info = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.join(out, "llm"), output_loading_info=True, attn_implementation="eager")
    assert type(llm).__name__ == "Qwen2ForCausalLM"
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    ids = torch.tensor([[1, 5, 9, 300, 301, 17, 2]])
    with torch.no_grad():
        np.testing.assert_array_equal(llm(ids).logits.numpy(), exported.parts[0](ids).logits.numpy())
    for cls, part in ((transformers.CLIPVisionModel, "clip"), (transformers.Dinov2Model, "dinov2")):
        _, info = cls.from_pretrained(os.path.join(out, part), output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), part
    pixels = torch.randn(1, 3, ref.IMAGE_SIZE, ref.IMAGE_SIZE)
    with torch.no_grad():
        vit = transformers.CLIPVisionModel.from_pretrained(os.path.join(out, "clip"), attn_implementation="eager")
        np.testing.assert_array_equal(vit(pixel_values=pixels).last_hidden_state.numpy(),
                                      exported.parts[1](pixel_values=pixels).last_hidden_state.numpy())


def test_tokenizer_and_generation_config(exported):
    llm_dir = os.path.join(exported.out, "llm")
    hf_tok = transformers.AutoTokenizer.from_pretrained(llm_dir)
    tok = placeholder_tokenizer()
    text = "Output the coordinate of the small red circle [0.125, 0.5, 0.75, 1.0]."
    assert hf_tok(text, add_special_tokens=False).input_ids == tok.encode(text)
    assert hf_tok.convert_tokens_to_ids(["<image>", "<object>"]) == [ref.IMAGE_ID, ref.OBJECT_ID]
    assert hf_tok("<|im_start|>user\n<image>").input_ids[-1] == ref.IMAGE_ID  # one token, not text
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.pad_token == "<|endoftext|>"
    gen = transformers.GenerationConfig.from_pretrained(llm_dir)
    assert gen.eos_token_id == [tok.im_end_id, tok.endoftext_id] and not gen.do_sample


def test_tgg_config_holds_the_spec_numbers(exported):
    with open(os.path.join(exported.out, "tgg_config.json")) as f:
        cfg = json.load(f)
    # 56 px images, 14 px patches: 4 x 4 = 16 rows per <image> / <object>; CLIP 48 + DINOv2 32 wide.
    assert (cfg["image_size"], cfg["image_tokens"], cfg["object_tokens"]) == (56, 16, 16)
    assert (cfg["image_token_id"], cfg["object_token_id"]) == (ref.IMAGE_ID, ref.OBJECT_ID)
    assert (cfg["select_layer"], cfg["select_feature"], cfg["fusion"]) == (-2, "patch", "channel")
    assert cfg["projector"] == {"type": "mlp2x_gelu", "in_features": 80, "out_features": 64}
    assert cfg["normalization"]["clip"] == {"mean": [0.48145466, 0.4578275, 0.40821073],  # SPEC §2
                                            "std": [0.26862954, 0.26130258, 0.27577711]}
    assert cfg["normalization"]["dinov2"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert cfg["pad_fill"] == [122, 116, 104]


def test_export_imports_back_to_the_same_checkpoint(exported):
    out = exported.out
    params, saved_config = load_params(exported.checkpoint)
    back, config = import_hf(os.path.join(out, "llm"), os.path.join(out, "clip"), os.path.join(out, "dinov2"),
                             projector=os.path.join(out, "projector.safetensors"),
                             image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID,
                             scan_layers=saved_config.llm.scan_layers)
    assert config == saved_config
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_export_rounds_each_tensor_once(tied, tmp_path):
    out = str(tmp_path / "bf16")
    assert cli.main(["export-hf", "--checkpoint", tied.checkpoint, "--out", out, "--dtype", "bfloat16",
                     "--tokenizer", tied.tokenizer]) == 0
    want = {k: v.to(torch.bfloat16) for k, v in read_dir(tied.hf["dinov2"]).items()}
    assert_same_tensors(read_dir(os.path.join(out, "dinov2")), want)
    want = {k: v.to(torch.bfloat16) for k, v in read_dir(tied.hf["llm"]).items()}
    assert_same_tensors(read_dir(os.path.join(out, "llm")), want)
    with open(os.path.join(out, "llm", "config.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"
    llm = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, "llm"))
    assert llm.dtype == torch.bfloat16


def test_tensors_are_written_one_at_a_time(tmp_path):
    """The writer lets go of each tensor before it asks for the next one."""
    rng = np.random.default_rng(0)
    source = {f"t{i}": rng.normal(size=(3 + i, 5)).astype(np.float32) for i in range(4)}
    alive = []

    def read(name):
        gc.collect()
        assert all(r() is None for r in alive), "an earlier tensor is still held"
        array = source[name].copy()
        alive.append(weakref.ref(array))
        return array

    entries = [Entry(f"w{i}", f"t{i}", LINEAR if i % 2 else IDENTITY,
                     (5, 3 + i) if i % 2 else (3 + i, 5), np.dtype(ml_dtypes.bfloat16)) for i in range(4)]
    path = str(tmp_path / "x.safetensors")
    write_safetensors(path, entries, read)
    got = load_file(path)
    for i in range(4):
        want = source[f"t{i}"].T if i % 2 else source[f"t{i}"]
        assert got[f"w{i}"].dtype == torch.bfloat16
        assert torch.equal(got[f"w{i}"], torch.from_numpy(np.ascontiguousarray(want)).to(torch.bfloat16))


def test_reader_holds_one_layer_at_a_time(untied_sharded):
    reader = CheckpointReader(untied_sharded.checkpoint)
    params, config = load_params(untied_sharded.checkpoint)
    assert not config.llm.scan_layers
    layer0 = [n for n in reader.shapes if n.startswith("llm.layers.0.")]
    refs = []
    for name in layer0:
        array = reader(name)
        want = params["llm"]["layers"][0]
        for key in name.split(".")[3:]:
            want = want[key]
        np.testing.assert_array_equal(array, want)
        refs.append(weakref.ref(array))
        del array
    reader("llm.layers.1.mlp.up_proj.kernel")
    gc.collect()
    assert all(r() is None for r in refs)
    assert sorted(reader._pending) == sorted(n for n in reader.shapes if n.startswith("llm.layers.1.")
                                             and n != "llm.layers.1.mlp.up_proj.kernel")


def test_reader_of_stacked_layers_reads_each_tensor_once(tied):
    """Stacked layers: asking for one layer's tensor restores that tensor of every layer, and
    the other layers' slices wait to be asked for; names and shapes are per layer."""
    reader = CheckpointReader(tied.checkpoint)
    params, config = load_params(tied.checkpoint)
    assert config.llm.scan_layers and config.llm.num_layers > 1
    stacked = params["llm"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert reader.shapes["llm.layers.0.mlp.up_proj.kernel"].shape == stacked.shape[1:]
    np.testing.assert_array_equal(reader("llm.layers.0.mlp.up_proj.kernel"), stacked[0])
    assert sorted(reader._pending) == [f"llm.layers.{i}.mlp.up_proj.kernel"
                                       for i in range(1, config.llm.num_layers)]
    np.testing.assert_array_equal(reader("llm.layers.1.mlp.up_proj.kernel"), stacked[1])
    assert not reader.by_layer("llm") and reader.by_layer("projector")


def test_either_layout_loads_as_the_other(tied, tmp_path):
    """load_params restacks on loading: a stacked checkpoint read per layer (and saved so) reads
    back stacked as the same arrays."""
    stacked_params, stacked_config = load_params(tied.checkpoint)
    per_layer = {"llm": False, "clip": False, "dinov2": False}
    params, config = load_params(tied.checkpoint, scanned=per_layer)
    assert not config.llm.scan_layers and sorted(params["llm"]["layers"]) == list(range(config.llm.num_layers))
    for i in range(config.llm.num_layers):
        np.testing.assert_array_equal(params["llm"]["layers"][i]["self_attn"]["q_proj"]["kernel"],
                                      stacked_params["llm"]["layers"]["self_attn"]["q_proj"]["kernel"][i])
    save_params(str(tmp_path / "per_layer"), params, config)
    back, back_config = load_params(str(tmp_path / "per_layer"), scanned={"llm": True, "clip": True, "dinov2": True})
    assert back_config == stacked_config
    jax.tree.map(np.testing.assert_array_equal, back, stacked_params)


def test_restacking_on_a_mesh_lands_sharded(tied):
    """What init_from does when a run's layout differs from its checkpoint's: the stacked
    checkpoint restored onto an 8-device mesh per layer, each tensor sharded as the rules say."""
    stacked_params, config = load_params(tied.checkpoint)
    target = with_scan_layers(config, False)
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    shardings = sharding.state_shardings(nnx.state(abstract_model(target), nnx.Param), mesh).to_pure_dict()
    params, _ = load_params(tied.checkpoint, shardings=shardings, scanned=scanned_parts(target))
    kernel = params["llm"]["layers"][1]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding == shardings["llm"]["layers"][1]["mlp"]["up_proj"]["kernel"]
    assert len(kernel.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(kernel), stacked_params["llm"]["layers"]["mlp"]["up_proj"]["kernel"][1])


def test_trainer_step_dir_finds_the_run_tokenizer(tmp_path):
    workdir = str(tmp_path / "run")
    step_dir, params = fake_data.make_checkpoint(workdir)  # checkpoints/5/, tokenizer at WORKDIR/tokenizer
    out = str(tmp_path / "export")
    export_hf(step_dir, out)
    with open(os.path.join(workdir, "tokenizer", "tokenizer.json")) as f, \
            open(os.path.join(out, "llm", "tokenizer.json")) as g:
        assert json.load(f) == json.load(g)
    tensors = read_dir(os.path.join(out, "llm"))
    np.testing.assert_array_equal(tensors["model.layers.0.mlp.up_proj.weight"].numpy(),
                                  params["llm"]["layers"][0]["mlp"]["up_proj"]["kernel"].T)


def test_bad_inputs_fail_clearly(tied, tmp_path):
    lone = shutil.copytree(tied.checkpoint, tmp_path / "x" / "y" / "ckpt")  # no tokenizer near it
    with pytest.raises(FileNotFoundError, match="pass --tokenizer"):
        export_hf(str(lone), str(tmp_path / "a"))
    other = str(tmp_path / "tiny_tok")
    fake_data.train_tiny_tokenizer(["a b c"] * 4, vocab_size=270).save(other)  # <image> at id 3
    with pytest.raises(ValueError, match=r"tiny_tok puts <image>/<object> at ids 3/4.* uses 300/301"):
        export_hf(tied.checkpoint, str(tmp_path / "b"), tokenizer=other)
    with pytest.raises(FileNotFoundError, match="tgg_config.json: missing"):
        export_hf(str(tmp_path), str(tmp_path / "c"), tokenizer=tied.tokenizer)
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_hf(tied.checkpoint, str(tmp_path / "d"), dtype="float16", tokenizer=tied.tokenizer)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_checkpoint_saved_by_two_processes_exports_from_one(tmp_path):
    """Two jax.distributed CPU processes save one sharded checkpoint; this process exports it and
    importing the export gives the parameters they saved."""
    config = TGGConfig(llm=qwen2.tiny(num_layers=1), clip=clip.tiny(num_layers=2), dinov2=dinov2.tiny(num_layers=2),
                       image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID)
    config_dir, ckpt = str(tmp_path / "config"), str(tmp_path / "ckpt")
    save_config(config_dir, config)
    placeholder_tokenizer().save(os.path.join(ckpt, "tokenizer"))  # found beside the checkpoint
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.convert.two_process_save", str(port), str(i),
                               config_dir, ckpt], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-3000:]
    assert {d for d in os.listdir(os.path.join(ckpt, "params")) if d.startswith("ocdbt.process_")} == \
        {"ocdbt.process_0", "ocdbt.process_1"}  # really written by both

    out = str(tmp_path / "export")
    export_hf(ckpt, out)
    back, _ = import_hf(os.path.join(out, "llm"), os.path.join(out, "clip"), os.path.join(out, "dinov2"),
                        projector=os.path.join(out, "projector.safetensors"),
                        image_token_id=ref.IMAGE_ID, object_token_id=ref.OBJECT_ID, scan_layers=False)
    want = fake_data.random_params(config, seed=7)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(back), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
