"""A tiny random Grounding DINO, built offline from its transformers config, through the detector
backend: boxes checked against transformers' own post-processing, then a whole pipeline run."""

import collections
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from tgg_jax.data import shape_render, shape_scenes, shapes  # noqa: E402
from tgg_jax.synth import cli, detectors, steps  # noqa: E402
from tgg_jax.synth.shapes_server import serve  # noqa: E402

from tests.synth import common  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    path = tmp_path_factory.mktemp("grounding_dino")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *shape_scenes.SIZES, *shape_scenes.COLORS,
             *shape_scenes.KINDS]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    backbone = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                       num_heads=[1, 1, 1, 1], window_size=2,
                                       out_features=["stage2", "stage3", "stage4"])
    text = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32,
                                   max_position_embeddings=64)
    config = transformers.GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, num_queries=20,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    torch.manual_seed(0)
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(path)
    processor = transformers.GroundingDinoProcessor(
        image_processor=transformers.GroundingDinoImageProcessorPil(
            size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")))
    processor.save_pretrained(path)
    return str(path)


def test_boxes_match_transformers_post_processing(tiny_dino, monkeypatch):
    monkeypatch.setattr(detectors, "DUPLICATE_IOU", 1.0)  # keep every query's box
    detector = detectors.GroundingDino(tiny_dino, box_threshold=0.0, text_threshold=0.0)
    scene = shape_scenes.sample_scene(shapes.record_rng(0, "train", 0))
    image = shape_render.render_scene(scene).convert("RGB")
    phrases = ["small red circle", "blue square"]
    found = detector.detect(image, phrases)
    # Reference: transformers' post-processing of the same forward pass (all queries).
    text = "small red circle. blue square."
    inputs = detector.processor(images=image, text=text, return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    reference = detector.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0,
        target_sizes=[image.size[::-1]])[0]
    ref_boxes = reference["boxes"].tolist()
    ours = [box for boxes in found.values() for box, _ in boxes]
    assert len(ours) == len(ref_boxes) == 20  # every query went to one phrase
    for box in ours:
        assert min(max(abs(a - b) for a, b in zip(box, ref)) for ref in ref_boxes) < 1e-3
    # Each score is the best sigmoid logit over the phrase's own tokens (ids 1-3 and 5-6 here).
    probs = outputs.logits[0].sigmoid()
    tokens = {"small red circle": [1, 2, 3], "blue square": [5, 6]}
    for phrase, boxes in found.items():
        for box, score in boxes:
            q = min(range(20), key=lambda i: max(abs(a - b) for a, b in zip(box, ref_boxes[i])))
            assert score == pytest.approx(float(probs[q, tokens[phrase]].max()), abs=1e-6)
            other = [t for p, ts in tokens.items() if p != phrase for t in ts]
            assert score >= float(probs[q, other].max()) - 1e-6


def test_pipeline_with_grounding_dino(tiny_dino, tmp_path):
    images = common.make_images(tmp_path / "images", 2)
    problems = collections.Counter()
    detector = detectors.GroundingDino(tiny_dino, box_threshold=0.3, text_threshold=0.25)
    with Image.open(images / "shapes_train_000000.png") as image:
        objects, found = steps.ground(detector, image.convert("RGB"), "", ["small red circle"],
                                      problems, max_objects=12)
    assert objects and all(o["score"] >= 0.3 for o in objects.values())
    with serve(images, common.PROMPTS) as server:
        config = common.shapes_config(server.base_url, **{
            "detector.backend": "grounding_dino", "detector.model": tiny_dino,
            "detector.box_threshold": 0.3, "filters.min_confidence": 0.0,
            "filters.max_boxes_per_phrase": 100})
        code, summary = cli.synthesize(config, images, tmp_path / "out")
    assert code == 0 and summary["images"]["done"] == 2
    assert sum(summary["records_kept"].values()) > 0
