"""Attention maps (paper §5.2): the recomputed last-layer attention equals Hugging Face's eager
Qwen2 attention probabilities on the same weights, and the heatmap picks, sums and places the
right entries (hand-worked examples)."""

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests import hf_reference as ref
from tgg_jax import attention_maps
from tgg_jax.convert.import_hf import import_hf
from tgg_jax.data import shapes
from tgg_jax.data.example_spec import ExampleSpec
from tgg_jax.inference import prompt_inputs
from tgg_jax.models.tgg import TinyGroundingGPT
from tgg_jax.tiny.tokenizer import train_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = [t["value"] for i in range(48) for t in shapes.make_record(0, "train", i)["conversations"]]
    tok = train_tiny_tokenizer(texts, vocab_size=300)
    assert tok.vocab_size <= ref.IMAGE_ID  # ordinary ids stay clear of the reference's placeholder ids
    return tok


@pytest.fixture(scope="module")
def hf_and_model(tmp_path_factory, tokenizer):
    """The tiny HF parts and the same weights imported into TinyGroundingGPT, whose placeholder
    ids are the tokenizer's."""
    parts = ref.build_parts(tie=False, seed=1)
    dirs = ref.save_parts(str(tmp_path_factory.mktemp("hf")), *parts)
    params, config = import_hf(dirs["llm"], dirs["clip"], dirs["dinov2"], projector=dirs["projector"],
                               image_token_id=tokenizer.image_id, object_token_id=tokenizer.object_id)
    model = nnx.eval_shape(lambda: TinyGroundingGPT(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    return parts, model


def hf_attention(parts, ids, images, objects) -> np.ndarray:
    """Eager attention probabilities [layers, B, heads, T, T] of the HF Qwen2, captured while
    tests/hf_reference.py's independent PyTorch assembly runs (ids use its placeholder ids)."""
    captured = []

    def keep_weights(module, args, output):  # Qwen2Attention returns (output, attn_weights)
        captured.append(output[1].detach().numpy())

    hooks = [layer.self_attn.register_forward_hook(keep_weights) for layer in parts[0].model.layers]
    try:
        ref.reference_logits(parts, ids, images, objects)
    finally:
        for hook in hooks:
            hook.remove()
    return np.stack(captured)


def hf_last_layer_attention(parts, ids, images, objects) -> np.ndarray:
    return hf_attention(parts, ids, images, objects)[-1]


def to_reference_ids(ids, tokenizer):
    """Our placeholder ids -> the reference's (its assembly finds the runs by IMAGE_ID/OBJECT_ID)."""
    out = np.array(ids)
    out[ids == tokenizer.image_id], out[ids == tokenizer.object_id] = ref.IMAGE_ID, ref.OBJECT_ID
    return out


def example_inputs(tokenizer, seed):
    """(reference ids, our ids, images, objects): an image run and an object run, batch 2."""
    ids, images, objects = ref.example_inputs(seed=seed)
    stray = np.isin(ids, [tokenizer.image_id, tokenizer.object_id])
    ids = np.where(stray, 7, ids)  # ordinary tokens that would read as our placeholders
    assert 7 not in (tokenizer.image_id, tokenizer.object_id)
    ours = np.where(ids == ref.IMAGE_ID, tokenizer.image_id,
                    np.where(ids == ref.OBJECT_ID, tokenizer.object_id, ids))
    return ids, ours, images, objects


def test_last_layer_attention_equals_hf_eager(hf_and_model, tokenizer):
    parts, model = hf_and_model
    ids, ours, images, objects = example_inputs(tokenizer, seed=3)
    got = np.asarray(attention_maps.last_layer_attention(model, ours, images, objects))
    expected = hf_last_layer_attention(parts, ids, images, objects)
    assert got.shape == expected.shape == (2, 4, 48, 48)
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)


def test_every_layer_attention_equals_hf_eager(hf_and_model, tokenizer):
    parts, model = hf_and_model
    ids, ours, images, objects = example_inputs(tokenizer, seed=4)
    got = np.asarray(attention_maps.every_layer_attention(model, ours, images, objects))
    expected = hf_attention(parts, ids, images, objects)
    assert got.shape == expected.shape and got.shape[0] == len(parts[0].model.layers) >= 2
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)


def test_attention_map_of_a_shapes_question_matches_hf(hf_and_model, tokenizer):
    """The whole path on a tgg_shapes "where is <object>" record: the heatmap equals the one
    computed by hand from HF's probabilities (image run = keys, answer or object run = queries)."""
    parts, model = hf_and_model
    record = next(r for i in range(2, 40, 4) for r in [shapes.make_record(0, "test", i)]
                  if r["conversations"][0]["value"].startswith("Where is"))
    question, answer = (t["value"] for t in record["conversations"])
    boxes = record["objects"]
    spec = ExampleSpec(image_size=ref.IMAGE_SIZE, image_tokens=16, object_tokens=16, max_length=512, max_objects=1)
    pixels = prompt_inputs([record["conversations"][0]], record["image"], boxes, tokenizer, spec)
    for query, span in (("answer", None), ("answer", answer[1:6]), ("object", None)):
        result = attention_maps.attention_map(model, tokenizer, record["image"], question, answer, objects=boxes,
                                              query=query, span=span)
        ids = result.input_ids
        probs = hf_last_layer_attention(parts, to_reference_ids(ids, tokenizer)[None], pixels["images"][None],
                                        pixels["objects"][None])[0]
        keys = np.flatnonzero(ids == tokenizer.image_id)
        if query == "object":
            queries = np.flatnonzero(ids == tokenizer.object_id)
        else:  # the answer: after the last "<|im_start|>assistant\n", up to its <|im_end|>
            start = np.flatnonzero(ids == tokenizer.im_start_id)[-1] + len(tokenizer.encode("assistant\n")) + 1
            queries = np.arange(start, np.flatnonzero(ids == tokenizer.im_end_id)[-1])
            assert tokenizer.decode(ids[queries].tolist()) == answer
            if span:  # a contiguous part of the answer that spells the span (see test_span_tokens)
                assert set(result.query_positions) < set(queries)
                queries = result.query_positions
                assert span in tokenizer.decode(ids[queries].tolist())
        assert len(keys) == 16 and len(queries) > 0
        np.testing.assert_array_equal(result.query_positions, queries)
        heat = probs[:, queries][:, :, keys].sum(axis=(0, 1)).reshape(4, 4)
        heat = (heat - heat.min()) / (heat.max() - heat.min())
        np.testing.assert_allclose(result.heatmap, heat, atol=1e-5)
        assert result.image.size == (max(record["width"], record["height"]),) * 2


def test_patch_heatmap_hand_worked():
    """Two heads, keys at positions 1..4 = patches (0,0) (0,1) (1,0) (1,1) of a 2x2 grid, queries
    5 and 6. Summed attention per patch: 0.1+0.3+0.2+0.0, 0.2+0.1+0.0+0.2, ... -> min-max scaled."""
    probs = np.zeros((2, 7, 7))
    probs[0, 5, 1:5] = [0.1, 0.2, 0.3, 0.4]
    probs[1, 5, 1:5] = [0.3, 0.1, 0.0, 0.0]
    probs[0, 6, 1:5] = [0.2, 0.0, 0.1, 0.0]
    probs[1, 6, 1:5] = [0.0, 0.2, 0.0, 0.1]
    probs[:, 5:, 0] = 0.9  # the system prompt: not an image key, ignored
    heat = attention_maps.patch_heatmap(probs, [5, 6], [1, 2, 3, 4], grid=2)
    sums = np.array([[0.6, 0.5], [0.4, 0.5]])
    np.testing.assert_allclose(heat, (sums - 0.4) / 0.2, atol=1e-6)
    # Token fusion: keys 1..4 (CLIP grid) and 5..8 (DINOv2 grid) cover the same patches.
    probs = np.zeros((1, 10, 10))
    probs[0, 9, 1:9] = [1, 0, 0, 0, 0, 0, 0, 3]
    np.testing.assert_allclose(attention_maps.patch_heatmap(probs, [9], range(1, 9), grid=2),
                               [[1 / 3, 0], [0, 1]], atol=1e-6)


def test_patch_heatmap_errors():
    with pytest.raises(ValueError, match="no query tokens"):
        attention_maps.patch_heatmap(np.zeros((1, 5, 5)), [], [0, 1, 2, 3], grid=2)
    with pytest.raises(ValueError, match="3 image keys do not cover a 2x2"):
        attention_maps.patch_heatmap(np.zeros((1, 5, 5)), [4], [0, 1, 2], grid=2)


def test_overlay_puts_the_heat_on_its_patch():
    """A 60x60 grey square, heat only in the top-left patch of a 2x2 grid: jet's hottest colour
    (dark red) over the top-left corner, its coldest (dark blue) over the bottom-right."""
    square = Image.new("RGB", (60, 60), (100, 100, 100))
    out = attention_maps.overlay_heatmap(square, np.array([[1.0, 0.0], [0.0, 0.0]]), alpha=1.0)
    assert out.size == (60, 60)
    r, g, b = out.getpixel((2, 2))
    assert r > 100 and g < 20 and b < 20
    r, g, b = out.getpixel((57, 57))
    assert b > 100 and r < 20 and g < 20
    half = attention_maps.overlay_heatmap(square, np.zeros((2, 2)), alpha=0.5).getpixel((57, 57))
    assert half[0] == 50 and half[2] > 100  # (1 - alpha) * 100 + alpha * 0 in red
    with pytest.raises(ValueError, match="padded square"):
        attention_maps.overlay_heatmap(Image.new("RGB", (60, 40)), np.zeros((2, 2)))


def test_span_tokens_cover_exactly_the_span(tokenizer):
    answer = "a large red circle [0.125, 0.250, 0.500, 0.750]"
    ids = tokenizer.encode(answer)
    span = "[0.125, 0.250, 0.500, 0.750]"
    chosen = attention_maps.span_tokens(tokenizer, ids, span)
    assert chosen == list(range(chosen[0], chosen[-1] + 1))
    assert span in tokenizer.decode([ids[j] for j in chosen])
    assert span not in tokenizer.decode([ids[j] for j in chosen[1:]])
    assert span not in tokenizer.decode([ids[j] for j in chosen[:-1]])
    with pytest.raises(ValueError, match="is not in the answer"):
        attention_maps.span_tokens(tokenizer, ids, "blue")


def test_attention_map_errors(hf_and_model, tokenizer):
    _, model = hf_and_model
    record = shapes.make_record(0, "test", 0)
    question, answer = (t["value"] for t in record["conversations"])
    with pytest.raises(ValueError, match="query must be"):
        attention_maps.attention_map(model, tokenizer, record["image"], question, answer, query="image")
    with pytest.raises(ValueError, match="the question has 0 <object>"):
        attention_maps.attention_map(model, tokenizer, record["image"], question, answer, query="object")
    with pytest.raises(ValueError, match="no query tokens"):
        attention_maps.attention_map(model, tokenizer, record["image"], question, "")
