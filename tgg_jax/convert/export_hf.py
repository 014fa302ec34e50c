"""A tgg-jax parameter checkpoint -> Hugging Face directories that PyTorch loads as is.

    DIR/llm/                   Qwen2ForCausalLM: config.json, generation_config.json,
                               model.safetensors (or model-0000k-of-0000n.safetensors + index),
                               tokenizer.json + tokenizer_config.json (with <image> / <object>)
    DIR/clip/                  CLIPVisionModel
    DIR/dinov2/                Dinov2Model
    DIR/projector.safetensors  nn.Sequential(Linear, GELU, Linear): 0.weight, 0.bias, 2.weight, 2.bias
    DIR/tgg_config.json        what joins the parts (SPEC §1): feature layer, fusion, placeholder
                               ids and run lengths, image size, both normalisations

The export never holds the model: parameters are restored from Orbax one layer at a time (the
embedding and head alone) and written tensor by tensor into safetensors files whose headers are
planned from shapes alone. Peak host memory is ~3-4x the largest tensor (Orbax's read buffer, the
array, its transposed copy): ~8 GB for the 7B's 152064 x 3584 fp32 head, against 30 GB for the
model; measured 420 MiB above baseline for a 1.15 GiB checkpoint with a 125 MiB embedding. Orbax
merges the per-host files of a checkpoint written by several processes, so one process exports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from tgg_jax.checkpoint import PARAMS_DIR, abstract_model, latest_if_run, load_config
from tgg_jax.convert import clip_map, dinov2_map, projector_map, qwen2_map
from tgg_jax.convert.mapping import Hook, Rule, expand, tgg_name, tgg_path
from tgg_jax.data import preprocess
from tgg_jax.data.tokenizer import TggTokenizer, load_tokenizer, tokenizer_dir_beside
from tgg_jax.models.tgg import TGGConfig

EXPORT_FORMAT = "tgg-hf-export"
EXPORT_CONFIG_FILE = "tgg_config.json"
PROJECTOR_FILE = "projector.safetensors"
OBJECT_MARGIN = 0.1  # context around an object crop at inference (SPEC §2, ExampleSpec's default)
DEFAULT_SHARD_BYTES = 5 * 2 ** 30  # Hugging Face's usual shard size
EXPORT_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
# safetensors' dtype codes (https://github.com/huggingface/safetensors, "Format").
_SAFETENSORS_DTYPE = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16",
                      np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
                      np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8"}


def read_group(name: str) -> str:
    """What the reader restores together with `name`: its whole layer ('llm.layers.3') for a
    layer's parameter, else the parameter alone (embeddings and heads are the largest tensors)."""
    parts = name.split(".")
    for k, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: k + 1])
    return name


class CheckpointReader:
    """Parameters of a tgg-jax checkpoint as host numpy arrays, restored a layer at a time.

    `reader("llm.layers.0.mlp.up_proj.kernel")` restores layer 0 of the LLM (Orbax partial restore)
    and hands its tensors out one by one, forgetting each as it goes; shapes are checked against
    the config. Asking for the tensors layer by layer keeps at most one layer in memory.
    """

    def __init__(self, checkpoint: str):
        path = latest_if_run(checkpoint)  # a run's checkpoints/ -> its latest step
        self.config = load_config(path)
        self.params_dir = os.path.join(path, PARAMS_DIR)
        if not os.path.isdir(self.params_dir):
            raise FileNotFoundError(f"{self.params_dir}: missing parameter tree "
                                    f"({checkpoint} is not a tgg-jax parameter checkpoint)")
        state = nnx.state(abstract_model(self.config), nnx.Param)
        self.shapes = {tgg_name(p): v.get_value() for p, v in nnx.to_flat_state(state)}
        self._checkpointer = ocp.PyTreeCheckpointer()
        self._pending: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._pending:
            self._pending = {}  # let go of what is left of the previous group first
            group = read_group(name)
            self._pending = self._restore([n for n in self.shapes if read_group(n) == group])
        return self._pending.pop(name)

    def _restore(self, names: list[str]) -> dict[str, np.ndarray]:
        item, args = {}, {}
        for name in names:
            *parents, leaf = tgg_path(name)
            node_item, node_args = item, args
            for key in parents:
                node_item, node_args = node_item.setdefault(key, {}), node_args.setdefault(key, {})
            node_item[leaf] = jax.ShapeDtypeStruct(self.shapes[name].shape, self.shapes[name].dtype)
            node_args[leaf] = ocp.RestoreArgs(restore_type=np.ndarray)
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # Orbax logs ~6 INFO lines per restore
        try:
            restored = self._checkpointer.restore(self.params_dir, args=ocp.args.PyTreeRestore(
                item=item, restore_args=args, partial_restore=True))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.params_dir}: cannot read {read_group(names[0])}: {e}") from e
        finally:
            logging.set_verbosity(verbosity)
        out = {}
        for name in names:
            value = restored
            for key in tgg_path(name):
                value = value.get(key) if isinstance(value, dict) else None
            if not isinstance(value, np.ndarray):  # a partial restore hands back absent leaves as given
                raise ValueError(f"{self.params_dir}: parameter {name} is not in the checkpoint "
                                 f"(does tgg_config.json belong to it?)")
            want = self.shapes[name].shape
            if tuple(value.shape) != tuple(want):
                raise ValueError(f"{self.params_dir}: {name} has shape {tuple(value.shape)}, "
                                 f"its tgg_config.json implies {tuple(want)}")
            out[name] = value
        return out


@dataclasses.dataclass(frozen=True)
class Entry:
    """One HF tensor to write: where it comes from, and its shape and dtype on disk."""
    hf: str
    tgg: str
    hook: Hook
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def plan(table: list[Rule], num_layers: int, tgg_prefix: str, shapes: dict, dtype: np.dtype) -> list[Entry]:
    """Every tensor of one part with its HF shape and dtype on disk, from the abstract model
    alone; a layer's tensors come together (CheckpointReader restores a layer at a time)."""
    entries = []
    for hf, tgg, hook in sorted(expand(table, num_layers), key=lambda r: _layer_index(r[1])):
        src = shapes[tgg_prefix + tgg]
        # The hooks are views (transpose, reshape), so a zero-stride stand-in costs no memory.
        shape = hook.to_hf(np.broadcast_to(np.zeros((), src.dtype), src.shape)).shape
        on_disk = dtype if np.issubdtype(src.dtype, np.floating) else np.dtype(src.dtype)
        entries.append(Entry(hf, tgg_prefix + tgg, hook, tuple(shape), on_disk))
    return entries


def _layer_index(name: str) -> int:
    """-1 for tensors outside the layers (they keep their table order: sorting is stable)."""
    return next((int(p) for p in name.split(".") if p.isdigit()), -1)


def write_safetensors(path: str, entries: list[Entry], read: Callable[[str], np.ndarray]) -> None:
    """A safetensors file written tensor by tensor: the header (names, dtypes, shapes, offsets)
    comes from `entries`, then each tensor is read, converted and appended."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for e in entries:
        header[e.hf] = {"dtype": _SAFETENSORS_DTYPE[e.dtype], "shape": list(e.shape),
                        "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment with spaces
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for e in entries:
            array = np.ascontiguousarray(e.hook.to_hf(read(e.tgg)), dtype=e.dtype)
            if array.shape != e.shape:
                raise ValueError(f"{path}: {e.hf} came out as {array.shape}, planned {e.shape}")
            f.write(array.reshape(-1).view(np.uint8).data)  # little-endian, as the format wants


def write_sharded(directory: str, entries: list[Entry], read: Callable[[str], np.ndarray],
                  max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[str]:
    """model.safetensors, or model-0000k-of-0000n.safetensors + model.safetensors.index.json when
    the tensors exceed `max_shard_bytes` (a larger tensor gets a shard of its own)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    for name, shard in zip(names, shards):
        write_safetensors(os.path.join(directory, name), shard, read)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(e.nbytes for e in entries)},
                 "weight_map": {e.hf: name for name, shard in zip(names, shards) for e in shard}}
        _write_json(os.path.join(directory, "model.safetensors.index.json"), index)
    return names


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def llm_config(config: TGGConfig, tokenizer: TggTokenizer, dtype: str) -> dict:
    return {**config.llm.to_hf_dict(), "dtype": dtype, "bos_token_id": tokenizer.endoftext_id,
            "eos_token_id": tokenizer.im_end_id, "pad_token_id": tokenizer.endoftext_id}


def generation_config(tokenizer: TggTokenizer) -> dict:
    """Greedy, stopping at <|im_end|> or <|endoftext|> (what tgg_jax.inference does)."""
    return {"bos_token_id": tokenizer.endoftext_id, "pad_token_id": tokenizer.endoftext_id,
            "eos_token_id": [tokenizer.im_end_id, tokenizer.endoftext_id], "do_sample": False}


def export_config(config: TGGConfig, dtype: str) -> dict:
    """DIR/tgg_config.json: how the HF parts make TinyGroundingGPT (read by tgg_jax.torch)."""
    return {
        "format": EXPORT_FORMAT, "version": 1, "dtype": dtype,
        "parts": {"llm": "llm", "clip": "clip", "dinov2": "dinov2", "projector": PROJECTOR_FILE},
        "select_layer": config.select_layer, "select_feature": config.select_feature,
        "fusion": config.fusion, "object_pool": config.object_pool, "image_pool": config.image_pool,
        "image_token_id": config.image_token_id, "object_token_id": config.object_token_id,
        "image_tokens": config.image_tokens, "object_tokens": config.object_tokens,
        "image_size": config.image_size, "pad_fill": list(preprocess.PAD_FILL),
        "object_margin": OBJECT_MARGIN,
        "projector": {"type": "mlp2x_gelu", "in_features": config.visual_width,
                      "out_features": config.llm.hidden_size},
        "normalization": {"clip": {"mean": list(preprocess.CLIP_MEAN), "std": list(preprocess.CLIP_STD)},
                          "dinov2": {"mean": list(preprocess.IMAGENET_MEAN),
                                     "std": list(preprocess.IMAGENET_STD)}},
        "tgg_jax_config": config.to_dict(),  # the full model config, for the way back
    }


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
    _write_json(os.path.join(directory, "config.json"), hf_config)
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
                plan(qwen2_map.qwen2_table(config.llm), config.llm.num_layers, "llm.", shapes, on_disk),
                read, max_shard_bytes)
    _write_json(os.path.join(llm_dir, "generation_config.json"), generation_config(tok))
    tok.save(llm_dir)
    # Names keep the `vision_model.` prefix of the official CLIP checkpoints: transformers 5 loads
    # them into CLIPVisionModel as well as its own unprefixed names, and 4.x only loads these.
    _write_part(clip_dir, {**config.clip.to_hf_dict(), "architectures": ["CLIPVisionModel"], "dtype": dtype},
                plan(clip_map.CLIP_TABLE, config.clip.num_layers, "clip.", shapes, on_disk),
                read, max_shard_bytes)
    dino_table = dinov2_map.dinov2_table(config.dinov2.use_mask_token, config.dinov2.qkv_bias)
    _write_part(dino_dir, {**config.dinov2.to_hf_dict(), "architectures": ["Dinov2Model"], "dtype": dtype},
                plan(dino_table, config.dinov2.num_layers, "dinov2.", shapes, on_disk),
                read, max_shard_bytes)
    write_safetensors(os.path.join(out, PROJECTOR_FILE),
                      plan(projector_map.PROJECTOR_TABLE, 0, "projector.", shapes, on_disk), read)
    _write_json(os.path.join(out, EXPORT_CONFIG_FILE), export_config(config, dtype))
    logging.info("exported %s -> %s (%s, %.3fB parameters)", checkpoint, out, dtype,
                 sum(math.prod(s.shape) for s in shapes.values()) / 1e9)
