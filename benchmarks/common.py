"""Shared set-up for the benchmarks: one set of random Hugging Face parts, loaded both as the
tgg-jax model (through `import_hf`, as users do) and as the PyTorch assembly of the same HF
modules (tgg_jax.torch), so both sides compute the same function on the same batch."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch
import transformers
from flax import nnx
from safetensors.torch import save_file

from configs.common import LLM_AND_PROJECTOR
from tgg_jax.convert.import_hf import import_hf
from tgg_jax.models.tgg import TinyGroundingGPT, with_dtype
from tgg_jax.spec import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, PAD_FILL


@dataclasses.dataclass(frozen=True)
class Size:
    """A small TinyGroundingGPT for CPU benchmarks (same structure as the real presets)."""
    vocab: int = 4096
    hidden: int = 256
    mlp: int = 704
    layers: int = 4
    heads: int = 8
    kv_heads: int = 2
    vision_width: int = 128
    vision_layers: int = 4
    image_size: int = 112
    batch: int = 4
    text_tokens: int = 64


SIZES = {"small": Size(), "1.5b": Size(vocab=151936, hidden=1536, mlp=8960, layers=28, heads=12, kv_heads=2,
                                       vision_width=1024, vision_layers=24, image_size=336, batch=8,
                                       text_tokens=128)}


TRAINABLE = LLM_AND_PROJECTOR  # what training updates; the towers stay frozen


def arg_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark takes: model size, compute dtype, timed repeats."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=repeats)
    return p


def build_parts(size: Size, root: str):
    torch.manual_seed(0)
    llm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.mlp,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        tie_word_embeddings=True, max_position_embeddings=4096))
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=size.vision_width, intermediate_size=4 * size.vision_width,
        num_hidden_layers=size.vision_layers, num_attention_heads=max(size.vision_width // 64, 1),
        image_size=size.image_size, patch_size=14, hidden_act="quick_gelu"))
    dino = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=size.vision_width, num_hidden_layers=size.vision_layers,
        num_attention_heads=max(size.vision_width // 64, 1), image_size=size.image_size, patch_size=14))
    projector = torch.nn.Sequential(torch.nn.Linear(2 * size.vision_width, size.hidden), torch.nn.GELU(),
                                    torch.nn.Linear(size.hidden, size.hidden))
    dirs = {k: os.path.join(root, k) for k in ("llm", "clip", "dinov2")}
    llm.save_pretrained(dirs["llm"])
    clip.save_pretrained(dirs["clip"])
    dino.save_pretrained(dirs["dinov2"])
    dirs["projector"] = os.path.join(root, "projector.safetensors")
    save_file({k: v.contiguous() for k, v in projector.state_dict().items()}, dirs["projector"])
    return (llm, clip, dino, projector), dirs


def load_both(size: Size, dtype: str = "float32"):
    """(jax model, torch model, config); the torch side uses sdpa attention, its fast path."""
    from tgg_jax.torch.model import TGGExportConfig, TinyGroundingGPT as TorchTGG
    root = tempfile.mkdtemp(prefix="tgg_bench_")
    (llm, clip, dino, projector), dirs = build_parts(size, root)
    image_id, object_id = size.vocab - 2, size.vocab - 1
    params, config = import_hf(dirs["llm"], dirs["clip"], dirs["dinov2"], projector=dirs["projector"],
                               image_token_id=image_id, object_token_id=object_id)
    config = with_dtype(config, dtype)
    model = TinyGroundingGPT(config, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    export = TGGExportConfig(select_layer=-2, select_feature="patch", fusion="channel", object_pool=1, image_pool=1,
                             image_token_id=image_id, object_token_id=object_id,
                             image_tokens=config.image_tokens, object_tokens=config.object_tokens,
                             image_size=size.image_size, clip_mean=tuple(CLIP_MEAN), clip_std=tuple(CLIP_STD),
                             dinov2_mean=tuple(IMAGENET_MEAN), dinov2_std=tuple(IMAGENET_STD),
                             pad_fill=tuple(PAD_FILL), object_margin=0.1, dtype=dtype, parts={})
    torch_dtype = getattr(torch, dtype)
    reference = TorchTGG(export, llm.to(torch_dtype), clip.to(torch_dtype), dino.to(torch_dtype),
                         projector.to(torch_dtype)).eval()
    return model, reference, config


def batch(size: Size, config, seed: int = 0) -> dict:
    """One image and one object per sequence, text around them."""
    rng = np.random.default_rng(seed)
    t = config.image_tokens + config.object_tokens + size.text_tokens
    ids = rng.integers(0, size.vocab - 2, size=(size.batch, t)).astype(np.int32)
    ids[:, 4:4 + config.image_tokens] = config.image_token_id
    start = 8 + config.image_tokens
    ids[:, start:start + config.object_tokens] = config.object_token_id
    s = size.image_size
    return {"input_ids": ids,
            "images": rng.integers(0, 256, (size.batch, 1, s, s, 3)).astype(np.uint8),
            "objects": rng.integers(0, 256, (size.batch, 1, s, s, 3)).astype(np.uint8)}


def train_batch(b: dict) -> dict:
    """`batch` plus what a training step reads: positions, one segment, next-token targets."""
    n, t = b["input_ids"].shape
    return {**b, "positions": np.tile(np.arange(t, dtype=np.int32), (n, 1)),
            "segment_ids": np.ones_like(b["input_ids"]), "targets": np.roll(b["input_ids"], -1, axis=1),
            "target_mask": np.ones_like(b["input_ids"], bool)}


def timeit(fn, *, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of fn() (fn must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
