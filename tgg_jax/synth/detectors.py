"""Grounding backends (S1): phrases -> boxes with scores, in original pixels.

`detect(image, phrases, key)` -> {phrase: [(box [x1, y1, x2, y2], score), ...]} with boxes at or
above the backend's box threshold, best first. Backends:

- grounding_dino: Grounding DINO through transformers (zero-shot object detection). torch and
  transformers are imported only when this backend is built.
- rec: a tgg-jax checkpoint asked "Output the coordinate of the {phrase}." (one box, score 1).
- annotations: boxes already in the source, from a JSON file
  {image path relative to image_root: [{"phrase": str, "box": [x1, y1, x2, y2]}, ...]}
  (score 1); no detection runs.
"""

from __future__ import annotations

import io
import json
import pathlib
from collections.abc import Sequence

from PIL import Image

from tgg_jax import inference, spec
from tgg_jax.data import coords
from tgg_jax.synth.filters import iou

Detections = dict[str, list[tuple[list[float], float]]]
# Grounding DINO proposes several queries per object; boxes of one phrase overlapping more than
# this are one object (the best-scoring box is kept).
DUPLICATE_IOU = 0.7


def suppress_duplicates(found: list[tuple[list[float], float]]) -> list[tuple[list[float], float]]:
    """Greedy non-maximum suppression of one phrase's boxes, best score first."""
    kept: list[tuple[list[float], float]] = []
    for box, score in sorted(found, key=lambda d: -d[1]):
        if all(iou(box, k[0]) <= DUPLICATE_IOU for k in kept):
            kept.append((box, score))
    return kept


class Annotations:
    """Boxes from the source's annotations, matched to L1 phrases case-insensitively."""

    name = "annotations"

    def __init__(self, path: str | pathlib.Path):
        try:
            self.table = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"detector.annotations {path}: cannot read it as JSON ({e})") from e
        if not isinstance(self.table, dict):
            raise ValueError(f"detector.annotations {path}: expected a JSON object keyed by image")

    def detect(self, image: Image.Image, phrases: Sequence[str], key: str) -> Detections:
        entries = self.table.get(key) or []
        out: Detections = {}
        for phrase in phrases:
            out[phrase] = [([float(v) for v in e["box"]], 1.0) for e in entries
                           if isinstance(e, dict) and str(e.get("phrase", "")).lower() == phrase]
        return out


class GroundingDino:
    """Grounding DINO: each query's box goes to the listed phrase whose tokens it scores highest
    (the maximum of the sigmoid logits over the phrase's tokens, as GroundingDINO's phrase
    mapping does), kept if that score reaches box_threshold."""

    def __init__(self, model: str, box_threshold: float, text_threshold: float, device: str = "cpu"):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.torch = torch
        self.processor = AutoProcessor.from_pretrained(model)
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(model).to(device).eval()
        self.device, self.box_threshold, self.text_threshold = device, box_threshold, text_threshold
        self.name = f"grounding_dino:{model}"

    def detect(self, image: Image.Image, phrases: Sequence[str], key: str = "") -> Detections:
        torch = self.torch
        # "phrase one. phrase two." is the prompt form Grounding DINO was trained with.
        spans, text = [], ""
        for phrase in phrases:
            spans.append((len(text), len(text) + len(phrase)))
            text += phrase + ". "
        text = text.strip()
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        token_sets = [[i for i, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b]
                      for a, b in spans]
        with torch.no_grad():
            outputs = self.model(**inputs)
        probs = outputs.logits[0].sigmoid()[:, :len(offsets)]  # [queries, tokens]
        boxes = outputs.pred_boxes[0]                           # cx, cy, w, h in [0, 1]
        width, height = image.size
        found: Detections = {p: [] for p in phrases}
        scores = torch.stack([probs[:, t].max(dim=1).values if t else torch.zeros(len(probs))
                              for t in token_sets], dim=1)      # [queries, phrases]
        best, which = scores.max(dim=1)
        for q in torch.nonzero(best >= self.box_threshold).flatten().tolist():
            cx, cy, w, h = boxes[q].tolist()
            box = [(cx - w / 2) * width, (cy - h / 2) * height,
                   (cx + w / 2) * width, (cy + h / 2) * height]
            found[phrases[which[q]]].append((box, float(best[q])))
        return {p: suppress_duplicates(d) for p, d in found.items()}


class Rec:
    """A tgg-jax checkpoint answering the paper's REC prompt for each phrase."""

    def __init__(self, checkpoint: str):
        self.model, self.config = inference.load_model(checkpoint)
        self.tokenizer = inference.checkpoint_tokenizer(checkpoint)
        self._predict = inference.predict
        self.name = f"rec:{checkpoint}"

    def detect(self, image: Image.Image, phrases: Sequence[str], key: str = "") -> Detections:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out: Detections = {}
        for phrase in phrases:
            answer = self._predict(self.model, self.config, self.tokenizer, buffer.getvalue(),
                                   spec.rec_prompt(f"the {phrase}"))
            box = coords.parse_first_box(answer)
            out[phrase] = ([] if box is None else
                           [(list(coords.square_to_pixel(box, *image.size)), 1.0)])
        return out


def build(config, image_root: str | pathlib.Path):
    """The detector the `detector` config section names."""
    backend = config.backend
    if backend == "annotations":
        return Annotations(config.annotations or pathlib.Path(image_root) / "annotations.json")
    if backend == "grounding_dino":
        return GroundingDino(config.model, config.box_threshold, config.text_threshold,
                             config.device)
    if backend == "rec":
        if not config.rec_checkpoint:
            raise ValueError("detector.backend=rec needs detector.rec_checkpoint")
        return Rec(config.rec_checkpoint)
    raise ValueError(f"unknown detector.backend {backend!r}; expected grounding_dino, rec or "
                     "annotations")
