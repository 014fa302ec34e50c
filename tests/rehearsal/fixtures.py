"""Raw files for the rehearsal, each in its public release layout, plus tiny random Hugging Face
checkpoints with the real Qwen2.5 tokenizer — what a user downloads, in miniature.

    python -m tests.rehearsal.fixtures ROOT

ROOT/hf/       qwen2.5/ (Qwen2ForCausalLM + Qwen2.5 tokenizer files), clip/, dinov2/
ROOT/raw/      LLaVA-Pretrain/            blip_laion_cc_sbu_558k.json + images/00000/...
               refer/data/                refcoco/refs(unc).p, refcoco+/refs(unc).p,
                                          refcocog/refs(umd).p (+ instances.json each),
                                          images/mscoco/images/train2014/
               visual_genome/             region_descriptions.json, image_data.json, VG_100K*/
               playground/data/           sharegpt4v_mix665k_...json (text-only turns too),
                                          coco/train2017/
               flickr30k_entities/        Sentences/, Annotations/, train/val/test.txt
               flickr30k-images/          the Flickr30K images, kept apart as released
               coco/val2014/              COCO val2014 (POPE's and VQAv2's images)
               eval/                      pope/coco/, vqav2/, gqa/, scienceqa/, MME, MMBench,
                                          llava-bench-in-the-wild/
Images are small (the model sees them padded and resized to 336 px either way).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.testing_tokenizers import make_qwen25_tokenizer_dir

COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("square", "circle")


def _image(path: Path, seed: int, size=(96, 72)) -> tuple[int, int, int, int]:
    """A noisy JPEG with one coloured shape; returns the shape's pixel box."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(80, 176, (size[1], size[0], 3), np.uint8)
    image = Image.fromarray(pixels)
    w, h = size
    x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    box = (x1, y1, x1 + w // 3, y1 + h // 3)
    ImageDraw.Draw(image).rectangle(box, fill=COLORS[seed % 4])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return box


def _json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _turns(*pairs: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(pairs)]


# ---------------------------------------------------------------- models


def hf_models(root: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    llm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6))
    llm.save_pretrained(root / "qwen2.5")
    make_qwen25_tokenizer_dir(str(root / "qwen2.5"))
    transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        image_size=336, patch_size=14, hidden_act="quick_gelu")).save_pretrained(root / "clip")
    transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2,
        image_size=518, patch_size=14)).save_pretrained(root / "dinov2")


# ---------------------------------------------------------------- training data


def llava_pretrain(raw: Path, n: int = 12) -> None:
    """LCS-558K layout: images/00000/000000000.jpg, the instruction and <image> in the human turn."""
    items = []
    for i in range(n):
        rel = f"{i // 8:05d}/{i:09d}.jpg"
        _image(raw / "images" / rel, seed=i)
        items.append({"id": f"{i:09d}", "image": rel, "conversations": _turns(
            "Render a clear and concise summary of the photo.\n<image>",
            f"a {COLORS[i % 4]} {SHAPES[i % 2]} on a grey background")})
    _json(raw / "blip_laion_cc_sbu_558k.json", items)


def refer(raw: Path) -> None:
    """The refer toolkit's data/ folder: Python-2 pickles of refs, COCO instances, train2014."""
    images = raw / "images/mscoco/images/train2014"
    splits = {"refcoco": ("unc", ("train", "val", "testA", "testB")),
              "refcoco+": ("unc", ("train", "val", "testA", "testB")),
              "refcocog": ("umd", ("train", "val", "test"))}
    for dataset, (split_by, names) in splits.items():
        coco_images, annotations, refs = [], [], []
        for k, split in enumerate(s for s in names for _ in range(3)):
            image_id = 100 + k
            file_name = f"COCO_train2014_{image_id:012d}.jpg"
            x1, y1, x2, y2 = _image(images / file_name, seed=image_id)
            coco_images.append({"id": image_id, "file_name": file_name, "width": 96, "height": 72})
            annotations.append({"id": 1000 + k, "image_id": image_id, "category_id": 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1]})
            color = COLORS[image_id % 4]
            refs.append({"ref_id": k, "ann_id": 1000 + k, "image_id": image_id, "split": split,
                         "category_id": 1, "sentences": [
                             {"sent_id": 2 * k, "sent": f"the {color} square", "raw": "", "tokens": []},
                             {"sent_id": 2 * k + 1, "sent": f"{color} box", "raw": "", "tokens": []}]})
        (raw / dataset).mkdir(parents=True, exist_ok=True)
        (raw / dataset / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
        _json(raw / dataset / "instances.json", {"images": coco_images, "annotations": annotations,
                                                 "categories": [{"id": 1, "name": "square"}]})


def visual_genome(raw: Path) -> None:
    images, regions = [], []
    for i, folder in ((1, "VG_100K"), (2, "VG_100K_2")):
        x1, y1, x2, y2 = _image(raw / folder / f"{i}.jpg", seed=200 + i)
        images.append({"image_id": i, "width": 96, "height": 72,
                       "url": f"https://cs.stanford.edu/people/rak248/{folder}/{i}.jpg"})
        regions.append({"id": i, "regions": [
            {"region_id": 10 * i, "image_id": i, "x": x1, "y": y1, "width": x2 - x1,
             "height": y2 - y1, "phrase": f"a {COLORS[(200 + i) % 4]} square"},
            {"region_id": 10 * i + 1, "image_id": i, "x": 0, "y": 0, "width": 40, "height": 30,
             "phrase": "grey noise"}]})
    _json(raw / "image_data.json", images)
    _json(raw / "region_descriptions.json", regions)


def coco_train2017(raw: Path, n: int = 8) -> list[str]:
    out = []
    for i in range(n):
        out.append(f"coco/train2017/{300 + i:012d}.jpg")
        _image(raw / out[-1], seed=300 + i)
    return out


def sharegpt4v_mix(playground: Path) -> None:
    """ShareGPT4V's LLaVA-v1.5 mixture: image conversations (multi-turn) and text-only ones."""
    items = []
    for i, rel in enumerate(coco_train2017(playground)):
        color = COLORS[(300 + i) % 4]
        items.append({"id": f"{300 + i:012d}", "image": rel, "conversations": _turns(
            "<image>\nWhat colour is the square?", color,
            "Is there a circle?\nAnswer the question using a single word or phrase.", "No")})
    items.append({"id": "sharegpt_0", "model": "", "conversations": _turns(
        "Write one word.", "Word.")})
    _json(playground / "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json", items)


def flickr30k(raw: Path, images: Path, n: int = 4) -> None:
    """Flickr30K Entities (Sentences/, Annotations/, split lists) and the images kept apart."""
    for i in range(n):
        image_id = str(1000 + i)
        x1, y1, x2, y2 = _image(images / f"{image_id}.jpg", seed=400 + i)
        (raw / "Sentences").mkdir(parents=True, exist_ok=True)
        (raw / "Sentences" / f"{image_id}.txt").write_text(
            "[/EN#1/other A red square] sits on [/EN#2/scene grey noise] .\n"
            "[/EN#1/other The square] is red .\n")
        (raw / "Annotations").mkdir(parents=True, exist_ok=True)
        (raw / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>96</width>"
            "<height>72</height><depth>3</depth></size><object><name>1</name><bndbox>"
            f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object><object><name>2</name><scene>1</scene></object></annotation>")
    for split, ids in (("train", range(n - 2)), ("val", [n - 2]), ("test", [n - 1])):
        (raw / f"{split}.txt").write_text("".join(f"{1000 + i}\n" for i in ids))


# ---------------------------------------------------------------- benchmarks


def pope(raw: Path, val2014: Path) -> None:
    names = []
    for i in range(2):
        name = f"COCO_val2014_{500 + i:012d}.jpg"
        _image(val2014 / name, seed=500 + i)
        names.append(name)
    for category in ("random", "popular", "adversarial"):
        lines = [{"question_id": k, "image": names[k % 2], "label": ("yes", "no")[k % 2],
                  "text": f"Is there a {('square', 'dog')[k % 2]} in the image?"} for k in range(2)]
        path = raw / "coco" / f"coco_pope_{category}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def vqav2(raw: Path) -> None:
    _image(raw / "val2014/COCO_val2014_000000000042.jpg", seed=42)
    _image(raw / "test2015/COCO_test2015_000000000007.jpg", seed=7)
    _json(raw / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [
        {"image_id": 42, "question": "What colour is the square?", "question_id": 420}]})
    _json(raw / "v2_mscoco_val2014_annotations.json", {"annotations": [
        {"question_id": 420, "image_id": 42, "answer_type": "other",
         "multiple_choice_answer": "blue", "answers": [{"answer": "blue"}] * 10}]})
    _json(raw / "v2_OpenEnded_mscoco_test-dev2015_questions.json", {"questions": [
        {"image_id": 7, "question": "Is it raining?", "question_id": 70}]})


def gqa(raw: Path) -> None:
    _image(raw / "images/n123.jpg", seed=123)
    _json(raw / "testdev_balanced_questions.json", {
        "201": {"imageId": "n123", "question": "Is there a square?", "answer": "yes"},
        "202": {"imageId": "n123", "question": "What colour is it?", "answer": "yellow"}})


def scienceqa(raw: Path) -> None:
    _image(raw / "images/test/1/image.png", seed=1)
    _json(raw / "problems.json", {
        "1": {"question": "Which shape is shown?", "choices": ["circle", "square"], "answer": 1,
              "hint": "", "image": "image.png", "split": "test"},
        "2": {"question": "Is ice a solid?", "choices": ["yes", "no"], "answer": 0, "hint": "",
              "image": None, "split": "test"}})
    _json(raw / "pid_splits.json", {"train": [], "test": ["1", "2"]})


def mme(raw: Path) -> None:
    root = raw / "MME_Benchmark_release_version"
    _image(root / "existence/000001.jpg", seed=600)
    (root / "existence/000001.txt").write_text(
        "Is there a square in this image? Please answer yes or no.\tYes\n"
        "Is there a dog in this image? Please answer yes or no.\tNo\n")
    _image(root / "color/images/000002.png", seed=601)
    (root / "color/questions_answers_YN").mkdir(parents=True)
    (root / "color/questions_answers_YN/000002.txt").write_text(
        "Is the square blue? Please answer yes or no.\tYes\n"
        "Is the square red? Please answer yes or no.\tNo\n")


def mmbench(raw: Path) -> None:
    buffer = io.BytesIO()
    _image(raw / "tmp.png", seed=700)
    buffer.write((raw / "tmp.png").read_bytes())
    (raw / "tmp.png").unlink()
    image = base64.b64encode(buffer.getvalue()).decode()
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [{"index": 1, "question": "Which shape?", "hint": "nan", "A": "square",
             "B": "circle", "C": "nan", "D": "nan", "answer": "A", "category": "shape",
             "image": image},
            {"index": 1000001, "question": "Which shape?", "hint": "nan", "A": "circle",
             "B": "square", "C": "nan", "D": "nan", "answer": "B", "category": "shape",
             "image": image}]
    for split, cols in (("dev", columns), ("test", [c for c in columns if c != "answer"])):
        lines = ["\t".join(cols)] + ["\t".join(str(r[c]) for c in cols) for r in rows]
        (raw / f"mmbench_{split}_20230712.tsv").write_text("\n".join(lines) + "\n")


def llava_bench(raw: Path) -> None:
    _image(raw / "images/001.jpg", seed=800)
    lines = [{"question_id": 0, "image": "001.jpg", "category": "detail",
              "text": "Describe this photo in detail."},
             {"question_id": 1, "image": "001.jpg", "category": "conv",
              "text": "What colour is the square?"}]
    (raw / "questions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def write_all(root: str | os.PathLike) -> Path:
    root = Path(root)
    raw = root / "raw"
    hf_models(root / "hf")
    llava_pretrain(raw / "LLaVA-Pretrain")
    refer(raw / "refer/data")
    visual_genome(raw / "visual_genome")
    playground = raw / "playground/data"
    sharegpt4v_mix(playground)
    flickr30k(raw / "flickr30k_entities", raw / "flickr30k-images")
    eval_dir = raw / "eval"
    pope(eval_dir / "pope", raw / "coco/val2014")
    vqav2(eval_dir / "vqav2")
    gqa(eval_dir / "gqa")
    scienceqa(eval_dir / "scienceqa")
    mme(eval_dir / "MME")
    mmbench(eval_dir / "mmbench")
    llava_bench(eval_dir / "llava-bench-in-the-wild")
    return root


if __name__ == "__main__":
    print(write_all(sys.argv[1]))
