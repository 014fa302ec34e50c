"""A tgg-jax parameter checkpoint -> Hugging Face directories that PyTorch loads as is.

    DIR/llm/                   Qwen2ForCausalLM: config.json, generation_config.json,
                               model.safetensors (or model-0000k-of-0000n.safetensors + index),
                               tokenizer.json + tokenizer_config.json (with <image> / <object>)
    DIR/clip/                  CLIPVisionModel
    DIR/dinov2/                Dinov2Model
    DIR/projector.safetensors  nn.Sequential(Linear, GELU, Linear): 0.weight, 0.bias, 2.weight, 2.bias
    DIR/tgg_config.json        what joins the parts (SPEC §1): feature layer, fusion, placeholder
                               ids and run lengths, image size, both normalisations

The export never holds the model: parameters are restored from Orbax one layer at a time, or
one stacked tensor at a time for scanned layers (the embedding and head alone;
checkpoint_reader.py), and written tensor by tensor into safetensors files whose headers are
planned from shapes alone (safetensors_writer.py); hf_config.py writes the configs. Peak host
memory is ~3-4x the largest tensor read (Orbax's read buffer, the array, its transposed copy):
~8 GB for the 7B's 152064 x 3584 fp32 head against 30 GB for the model, and up to ~25 GB for a
scanned 7B, whose largest read is 28 layers of MLP kernels (7.6 GB; each layer is handed out as
a view of it). Measured 420 MiB above baseline for a 1.15 GiB per-layer checkpoint with a 125 MiB
embedding. Orbax merges the per-host files of a checkpoint written by several processes, so one
process exports it.
"""

from __future__ import annotations

import math
import os

import ml_dtypes
import numpy as np
from absl import logging

from tgg_jax.convert import clip_map, dinov2_map, projector_map, qwen2_map
from tgg_jax.convert.checkpoint_reader import CheckpointReader
from tgg_jax.convert.hf_config import (EXPORT_CONFIG_FILE, PROJECTOR_FILE, export_config,
                                       generation_config, llm_config)
from tgg_jax.convert.safetensors_writer import (DEFAULT_SHARD_BYTES, Entry, plan, write_json,
                                                write_safetensors, write_sharded)
from tgg_jax.data.tokenizer import TggTokenizer, load_tokenizer, tokenizer_dir_beside
from tgg_jax.models.tgg import TGGConfig

EXPORT_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def _checked_tokenizer(tokenizer: TggTokenizer, config: TGGConfig, source: str) -> TggTokenizer:
    got = (tokenizer.image_id, tokenizer.object_id)
    want = (config.image_token_id, config.object_token_id)
    if got != want:
        raise ValueError(f"tokenizer {source} puts <image>/<object> at ids {got[0]}/{got[1]}, the "
                         f"checkpoint's model uses {want[0]}/{want[1]}; pass the run's --tokenizer")
    if tokenizer.vocab_size > config.llm.vocab_size:
        raise ValueError(f"tokenizer {source} has {tokenizer.vocab_size} entries, more than the "
                         f"model's {config.llm.vocab_size} embedding rows")
    return tokenizer


def _write_part(directory: str, hf_config: dict, entries: list[Entry], read, max_shard_bytes: int) -> None:
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, "config.json"), hf_config)
    write_sharded(directory, entries, read, max_shard_bytes)


def export_hf(checkpoint: str, out: str, dtype: str = "float32", tokenizer: str | None = None,
              max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write `out` (layout in the module docstring) from a parameter checkpoint: CKPT/params +
    tgg_config.json, or a trainer's checkpoints/<step>/. `tokenizer`: HF tokenizer directory;
    by default the one beside the checkpoint (CKPT, CKPT/tokenizer, the run's WORKDIR/tokenizer)."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(EXPORT_DTYPES)}, got {dtype!r}")
    on_disk = EXPORT_DTYPES[dtype]
    read = CheckpointReader(checkpoint)
    config, shapes = read.config, read.shapes
    try:
        tokenizer_dir = tokenizer or tokenizer_dir_beside(checkpoint)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; pass --tokenizer DIR") from None
    tok = _checked_tokenizer(load_tokenizer(tokenizer_dir), config,
                             tokenizer or f"found beside {checkpoint}")
    llm_dir, clip_dir, dino_dir = (os.path.join(out, p) for p in ("llm", "clip", "dinov2"))

    _write_part(llm_dir, llm_config(config, tok, dtype),
                plan(qwen2_map.qwen2_table(config.llm), config.llm.num_layers, "llm.", shapes, on_disk,
                     read.by_layer("llm")),
                read, max_shard_bytes)
    write_json(os.path.join(llm_dir, "generation_config.json"), generation_config(tok))
    tok.save(llm_dir)
    # Names keep the `vision_model.` prefix of the official CLIP checkpoints: transformers 5 loads
    # them into CLIPVisionModel as well as its own unprefixed names, and 4.x only loads these.
    _write_part(clip_dir, {**config.clip.to_hf_dict(), "architectures": ["CLIPVisionModel"], "dtype": dtype},
                plan(clip_map.CLIP_TABLE, config.clip.num_layers, "clip.", shapes, on_disk, read.by_layer("clip")),
                read, max_shard_bytes)
    dino_table = dinov2_map.dinov2_table(config.dinov2.use_mask_token, config.dinov2.qkv_bias)
    _write_part(dino_dir, {**config.dinov2.to_hf_dict(), "architectures": ["Dinov2Model"], "dtype": dtype},
                plan(dino_table, config.dinov2.num_layers, "dinov2.", shapes, on_disk,
                     read.by_layer("dinov2")),
                read, max_shard_bytes)
    write_safetensors(os.path.join(out, PROJECTOR_FILE),
                      plan(projector_map.PROJECTOR_TABLE, 0, "projector.", shapes, on_disk), read)
    write_json(os.path.join(out, EXPORT_CONFIG_FILE), export_config(config, dtype))
    logging.info("exported %s -> %s (%s, %.3fB parameters)", checkpoint, out, dtype,
                 sum(math.prod(s.shape) for s in shapes.values()) / 1e9)
