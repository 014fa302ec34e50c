"""Hugging Face checkpoints -> a tgg-jax parameter checkpoint.

Each part is read tensor by tensor through its name table (tgg_jax/convert/*_map.py), checked
against the shape the model expects, and placed once into a host tree, so a 7B import holds one
copy of the weights plus one tensor in flight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
import numpy as np
from absl import logging
from flax import nnx

from tgg_jax.checkpoint import abstract_model
from tgg_jax.convert import clip_map, dinov2_map, projector_map, qwen2_map
from tgg_jax.convert.hf_dir import CheckpointError, HFCheckpoint
from tgg_jax.convert.mapping import Rule, import_tensors
from tgg_jax.models import clip, dinov2, qwen2, stacked
from tgg_jax.models.naming import tgg_name, tgg_path
from tgg_jax.models.projector import Projector
from tgg_jax.models.tgg import TGGConfig, scanned_parts, with_scan_layers


def open_parts(llm_dir: str, clip_dir: str, dinov2_dir: str):
    """Open the three HF directories, checking each is the model it should be."""
    llm = HFCheckpoint(llm_dir, ("qwen2",), ("Qwen2ForCausalLM",))
    vit = HFCheckpoint(clip_dir, ("clip", "clip_vision_model"), ("CLIPModel", "CLIPVisionModel"))
    dino = HFCheckpoint(dinov2_dir, ("dinov2",), ("Dinov2Model",))
    return llm, vit, dino


def config_from_hf(llm: HFCheckpoint, vit: HFCheckpoint, dino: HFCheckpoint, **tgg_options) -> TGGConfig:
    return TGGConfig(llm=qwen2.Qwen2Config.from_hf(llm.config),
                     clip=clip.CLIPVisionConfig.from_hf(vit.config),
                     dinov2=dinov2.Dinov2Config.from_hf(dino.config), **tgg_options)


def _checked(source: str, tensors: Iterator[tuple[str, np.ndarray]],
             expected: dict[str, jax.ShapeDtypeStruct]) -> Iterator[tuple[str, np.ndarray]]:
    for name, array in tensors:
        if name not in expected:
            raise CheckpointError(f"{source}: maps to {name!r}, which the model does not have")
        want = expected[name]
        if tuple(array.shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: shape mismatch for {name}: checkpoint gives "
                                  f"{tuple(array.shape)}, the model expects {tuple(want.shape)}")
        yield name, np.asarray(array, dtype=want.dtype)


def _read_part(ckpt: HFCheckpoint, table: list[Rule], num_layers: int, prefix: str, expected,
               rename: Callable[[str], str] = lambda n: n) -> Iterator[tuple[str, np.ndarray]]:
    missing = [r.hf for r in table if "{i}" not in r.hf and rename(r.hf) not in ckpt]
    if missing:
        raise CheckpointError(f"{ckpt.path}: tensors missing from the checkpoint: {missing[:5]}")
    read = lambda name: ckpt.read(rename(name))  # noqa: E731
    return _checked(ckpt.path, import_tensors(read, table, num_layers, tgg_prefix=prefix), expected)


def fresh_projector(config: TGGConfig, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """A newly initialised projector (stage 1 starts from one)."""
    proj = Projector(config.visual_width, config.llm.hidden_size, rngs=nnx.Rngs(seed))
    for path, var in nnx.to_flat_state(nnx.state(proj, nnx.Param)):
        yield "projector." + tgg_name(path), np.asarray(var.get_value())


def projector_from_file(path: str) -> Callable[[str], np.ndarray]:
    """A reader over a safetensors projector file (LLaVA `mm_projector` layout, any prefix)."""
    from safetensors.numpy import load_file
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises several types for non-safetensors input
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    by_suffix = {}
    for name, value in tensors.items():
        by_suffix[name.split("mm_projector.")[-1]] = value

    def read(name):
        if name not in by_suffix:
            raise CheckpointError(f"{path}: tensor {name!r} not found (has {sorted(tensors)[:6]})")
        return by_suffix[name]
    return read


def import_hf(llm_dir: str, clip_dir: str, dinov2_dir: str, projector: str | None = None,
              seed: int = 0, scan_layers: bool = True, **tgg_options) -> tuple[dict, TGGConfig]:
    """Read the three HF directories (and optionally a projector) into (params pure dict, config).
    `scan_layers`: store every part's layers stacked (models/stacked.py), as the presets run."""
    llm, vit, dino = open_parts(llm_dir, clip_dir, dinov2_dir)
    config = with_scan_layers(config_from_hf(llm, vit, dino, **tgg_options), scan_layers)
    # The tables name layers one by one; stacked parts take each layer as a slice.
    state = nnx.state(abstract_model(with_scan_layers(config, False)), nnx.Param)
    expected = {tgg_name(p): v.get_value() for p, v in nnx.to_flat_state(state)}
    scanned = scanned_parts(config)

    parts = [
        _read_part(llm, qwen2_map.qwen2_table(config.llm), config.llm.num_layers, "llm.", expected),
        # A full CLIPModel stores the tower under "vision_model."; transformers 5 saves a bare
        # CLIPVisionModel without that prefix.
        _read_part(vit, clip_map.CLIP_TABLE, config.clip.num_layers, "clip.", expected,
                   rename=lambda n: n if n in vit else clip_map.strip_vision_prefix(n)),
        _read_part(dino, dinov2_map.dinov2_table(config.dinov2.use_mask_token, config.dinov2.qkv_bias), config.dinov2.num_layers, "dinov2.", expected),
    ]
    if projector:
        parts.append(_checked(projector, import_tensors(projector_from_file(projector),
                                                        projector_map.PROJECTOR_TABLE, 0,
                                                        tgg_prefix="projector."), expected))
    else:
        parts.append(_checked("fresh projector", fresh_projector(config, seed), expected))

    pure = nnx.state(abstract_model(config), nnx.Param).to_pure_dict()
    assigned = set()
    for part in parts:
        for name, array in part:
            layer = stacked.per_layer_name(name) if scanned.get(name.split(".")[0]) else None
            node = pure
            *parents, leaf = tgg_path(layer[0] if layer else name)
            for key in parents:
                node = node[key]
            if layer:  # one buffer per stacked tensor, filled a layer at a time
                if not isinstance(node[leaf], np.ndarray):
                    node[leaf] = np.empty(node[leaf].shape, node[leaf].dtype)
                node[leaf][layer[1]] = array
            else:
                node[leaf] = array
            assigned.add(name)
    missing = sorted(set(expected) - assigned)
    if missing:
        raise CheckpointError(f"{len(missing)} model parameters were not found in any checkpoint, "
                              f"e.g. {missing[:5]}")
    n = sum(math.prod(v.shape) for v in expected.values())
    logging.info("imported %d tensors, %.3fB parameters", len(assigned), n / 1e9)
    return pure, config
