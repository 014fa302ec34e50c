"""tgg_jax.torch: the PyTorch TinyGroundingGPT loaded from a `tgg-convert export-hf` directory
gives the logits of the JAX model and of an independent PyTorch assembly of the original HF parts,
and the same greedy answers as tgg_jax.generate on the same prompts."""

import numpy as np
import pytest
import torch
from flax import nnx

from tests import hf_reference as ref
from tests.convert.export_fixtures import import_then_export
from tests.evals.fake_data import random_params
from tgg_jax.checkpoint import load_params, save_params
from tgg_jax.convert.export_hf import export_hf
from tgg_jax.data import shapes
from tgg_jax.data.example_spec import ExampleSpec
from tgg_jax.generate import SamplingConfig, generate, left_pad
from tgg_jax.inference import batch_inputs, prompt_inputs
from tgg_jax.models.tgg import TinyGroundingGPT as JaxTinyGroundingGPT
from tgg_jax.torch import TGGProcessor, TinyGroundingGPT


def jax_model(params, config):
    model = nnx.eval_shape(lambda: JaxTinyGroundingGPT(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    return model


@nnx.jit
def jax_logits_of(model, input_ids, positions, segment_ids, images, objects):
    return model(input_ids, positions=positions, segment_ids=segment_ids, images=images, objects=objects)[0]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Random HF parts -> import-hf -> export-hf; the JAX model of the checkpoint between."""
    exported = import_then_export(str(tmp_path_factory.mktemp("rt")), tie=False)
    params, config = load_params(exported.checkpoint)
    return exported, jax_model(params, config)


@pytest.fixture(scope="module")
def random_export(imported, tmp_path_factory):
    """Parameters drawn at the scale of a trained model (weights N(0, 1/fan_in)): greedy answers
    differ from token to token, unlike the near-uniform logits of freshly initialised HF parts."""
    exported, _ = imported
    _, config = load_params(exported.checkpoint)
    params = random_params(config, seed=2)
    root = tmp_path_factory.mktemp("random")
    save_params(str(root / "ckpt"), params, config)
    export_hf(str(root / "ckpt"), str(root / "export"), tokenizer=exported.tokenizer)
    return str(root / "export"), jax_model(params, config), config


def test_logits_match_jax_and_the_reference_assembly(imported):
    exported, jax_tgg = imported
    model = TinyGroundingGPT.from_pretrained(exported.out, attn_implementation="eager")
    ids, images, objects = ref.example_inputs()  # an <image> run and an <object> run per row
    with torch.no_grad():
        logits = model(torch.from_numpy(ids.astype(np.int64)), images, objects).logits.numpy()
    pos = np.tile(np.arange(ids.shape[1], dtype=np.int32), (ids.shape[0], 1))
    jax_logits = jax_logits_of(jax_tgg, ids, pos, np.ones_like(ids), images, objects)
    np.testing.assert_allclose(logits, np.asarray(jax_logits), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, ref.reference_logits(exported.parts, ids, images, objects),
                               atol=1e-4, rtol=0)


def scene(index: int):
    """A tgg_shapes test image (encoded PNG, not square) and its object box in pixels."""
    record = shapes.make_record(0, "test", index)
    return record["image"], [tuple(float(v) for v in b) for b in record["objects"]]


PROMPTS = ["Output the coordinate of the small green diamond.", "Where is <object> in the image?"]


def jax_inputs(processor, config, prompts, images, boxes):
    """The same questions through tgg_jax.inference (what tgg-predict and tgg-eval use)."""
    spec = ExampleSpec(image_size=config.image_size, image_tokens=config.image_tokens,
                       object_tokens=config.object_tokens, max_length=1024, max_objects=1)
    items = [prompt_inputs([{"from": "human", "value": p}], img, b, processor.tokenizer, spec)
             for p, img, b in zip(prompts, images, boxes)]
    return batch_inputs(items, processor.tokenizer.endoftext_id)


def test_left_padded_batch_matches_jax(random_export):
    directory, jax_tgg, config = random_export
    model = TinyGroundingGPT.from_pretrained(directory, attn_implementation="eager")
    processor = TGGProcessor.from_pretrained(directory)
    (img0, _), (img2, boxes2) = scene(0), scene(2)
    inputs = processor(PROMPTS, images=[img0, img2], objects=[[], boxes2])
    mask = inputs["attention_mask"].numpy().astype(bool)
    assert mask.sum(axis=1).min() < mask.shape[1]  # the prompts differ in length: one is left-padded
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    padded = left_pad([row[m] for row, m in zip(inputs["input_ids"].numpy(), mask)], processor.tokenizer.endoftext_id)
    jax_logits = jax_logits_of(jax_tgg, padded["input_ids"], padded["positions"], padded["segment_ids"],
                               inputs["images"].numpy(), inputs["objects"].numpy())
    np.testing.assert_allclose(logits[mask], np.asarray(jax_logits)[mask], atol=1e-4, rtol=0)


def test_greedy_generation_matches_tgg_jax_generate(random_export):
    directory, jax_tgg, config = random_export
    model = TinyGroundingGPT.from_pretrained(directory, attn_implementation="eager")
    processor = TGGProcessor.from_pretrained(directory)
    (img0, _), (img2, boxes2) = scene(0), scene(2)
    inputs = processor(PROMPTS, images=[img0, img2], objects=[[], boxes2])
    batch = jax_inputs(processor, config, PROMPTS, [img0, img2], [[], boxes2])
    for key in ("input_ids", "images", "objects"):
        np.testing.assert_array_equal(inputs[key].numpy(), batch[key], err_msg=key)

    pad = processor.tokenizer.endoftext_id
    expected = generate(jax_tgg, batch, SamplingConfig(max_new_tokens=10, stop_ids=processor.stop_ids,
                                                       pad_id=pad)).tolist()
    assert all(len(set(row)) > 3 for row in expected)  # a real sequence, not one token repeated
    assert model.generate(**inputs, max_new_tokens=10).tolist() == expected

    # A stop token met mid-answer: greedy rows are the same up to it, then padding.
    stop = expected[0][3]
    cut = [row[: row.index(stop) + 1] + [pad] * (9 - row.index(stop)) if stop in row else row
           for row in expected]
    assert model.generate(**inputs, max_new_tokens=10, stop_ids=[stop]).tolist() == cut


def test_decode_cuts_at_the_first_stop_token(random_export):
    directory, _, _ = random_export
    processor = TGGProcessor.from_pretrained(directory)
    tok = processor.tokenizer
    ids = tok.encode("a red circle")
    tokens = torch.tensor([ids + [tok.im_end_id] + tok.encode(" more") + [tok.endoftext_id] * 2])
    assert processor.decode(tokens) == ["a red circle"]


def test_placeholder_count_above_the_images_is_an_error(random_export):
    directory, _, config = random_export
    model = TinyGroundingGPT.from_pretrained(directory)
    s = config.image_size
    ids = torch.full((1, config.image_tokens + 4), 7)
    ids[0, 1:config.image_tokens + 2] = config.image_token_id  # one placeholder too many
    with pytest.raises(ValueError, match=r"has 17 <image> placeholder tokens but only 16 rows"):
        model(ids, images=np.zeros((1, 1, s, s, 3), np.uint8))
    ids[0, 1:config.image_tokens + 2] = config.object_token_id
    with pytest.raises(ValueError, match=r"has 17 <object> placeholder tokens but only 0 rows"):
        model(ids)


def test_bfloat16_load(random_export):
    directory, _, config = random_export
    model = TinyGroundingGPT.from_pretrained(directory, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    s = config.image_size
    ids = torch.tensor([[5] + [config.image_token_id] * config.image_tokens + [9, 11]])
    with torch.no_grad():
        logits = model(ids, images=np.full((1, 1, s, s, 3), 128, np.uint8)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_not_an_export_directory_fails_clearly(imported, tmp_path):
    exported, _ = imported
    with pytest.raises(ValueError, match="is not an export"):
        TinyGroundingGPT.from_pretrained(exported.checkpoint)  # a tgg-jax checkpoint, not its export
    with pytest.raises(FileNotFoundError, match=r"tgg_config.json: missing"):
        TGGProcessor.from_pretrained(str(tmp_path))


def test_pooled_image_and_object_tokens_match_jax(imported, random_export, tmp_path):
    """image_pool / object_pool (k x k averages on the patch grid) survive the export."""
    _, _, config = random_export
    pooled = config.replace(image_pool=2, object_pool=2)
    params = random_params(pooled, seed=3)
    save_params(str(tmp_path / "ckpt"), params, pooled)
    export_hf(str(tmp_path / "ckpt"), str(tmp_path / "export"), tokenizer=imported[0].tokenizer)
    model = TinyGroundingGPT.from_pretrained(str(tmp_path / "export"), attn_implementation="eager")
    processor = TGGProcessor.from_pretrained(str(tmp_path / "export"))
    (img2, boxes2), = [scene(2)]
    inputs = processor([PROMPTS[1]], images=[img2], objects=[boxes2])
    ids = inputs["input_ids"].numpy()
    assert (ids == pooled.image_token_id).sum() == pooled.image_tokens == config.image_tokens // 4
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    pos = np.tile(np.arange(ids.shape[1], dtype=np.int32), (1, 1))
    jax_logits = jax_logits_of(jax_model(params, pooled), ids.astype(np.int32), pos, np.ones_like(ids, np.int32),
                               inputs["images"].numpy(), inputs["objects"].numpy())
    np.testing.assert_allclose(logits, np.asarray(jax_logits), atol=1e-4, rtol=0)
