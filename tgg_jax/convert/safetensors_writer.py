"""safetensors files written tensor by tensor: the header (names, dtypes, shapes, offsets) is
planned from shapes alone, then each tensor is read, converted and appended, so a file never
needs its tensors in memory together (the `safetensors` library writes from a dict of them).
Large exports are sharded as Hugging Face shards them, with a model.safetensors.index.json."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable

import ml_dtypes
import numpy as np

from tgg_jax.convert.mapping import Hook, Rule, expand

DEFAULT_SHARD_BYTES = 5 * 2 ** 30  # Hugging Face's usual shard size
# safetensors' dtype codes (https://github.com/huggingface/safetensors, "Format").
_SAFETENSORS_DTYPE = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16",
                      np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
                      np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "U8"}


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


def plan(table: list[Rule], num_layers: int, tgg_prefix: str, shapes: dict, dtype: np.dtype,
         by_layer: bool = True) -> list[Entry]:
    """Every tensor of one part with its HF shape and dtype on disk, from the abstract model
    alone; a layer's tensors come together (`by_layer`: CheckpointReader restores a layer at a
    time), else each table entry's layers together (it restores a stacked tensor at a time)."""
    entries = []
    rows = expand(table, num_layers)  # table order: an entry's layers together
    for hf, tgg, hook in sorted(rows, key=lambda r: _layer_index(r[1])) if by_layer else rows:
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
        write_json(os.path.join(directory, "model.safetensors.index.json"), index)
    return names


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
