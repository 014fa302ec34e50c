"""Test stand-ins: a TFDS-like source of tgg_shapes records and a tiny random checkpoint.

`open_source` has the signature of tgg_jax.data.pipeline.open_source, so configs use it with
`--config.source=tests.evals.fake_data:open_source` (no builders, no files). Records come back
the way `tfds.data_source` returns them: bytes strings, numpy arrays, columnar conversations.
"""

from __future__ import annotations

import functools
import os
import shutil

import jax
import numpy as np
from flax import nnx

from tgg_jax import checkpoint
from tgg_jax.data import shapes
from tgg_jax.models import clip, dinov2, qwen2, stacked
from tgg_jax.models.tgg import TGGConfig, TinyGroundingGPT, scanned_parts, with_scan_layers
from tgg_jax.tiny.tokenizer import train_tiny_tokenizer

NUM_EXAMPLES = 20


def as_read_back(record: dict) -> dict:
    """A record as tfds.data_source reads it back."""
    out = {k: v.encode() if isinstance(v, str) else v for k, v in record.items()}
    out["width"], out["height"] = np.int32(record["width"]), np.int32(record["height"])
    out["conversations"] = {"from": [t["from"].encode() for t in record["conversations"]],
                            "value": [t["value"].encode() for t in record["conversations"]]}
    return out


@functools.lru_cache(maxsize=256)
def shapes_record(split: str, index: int) -> dict:
    return as_read_back(shapes.make_record(0, split, index))


class ShapesSource:
    """Random access to the first `size` tgg_shapes records of a split."""

    def __init__(self, split: str, size: int = NUM_EXAMPLES):
        self.split, self.size = split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return shapes_record(self.split, index)


def open_source(dataset: str, split: str, data_dir: str) -> ShapesSource:
    del dataset, data_dir
    return ShapesSource(split)


def random_params(config: TGGConfig, seed: int = 0) -> dict:
    """Random parameters in numpy (an eager nnx init compiles one XLA program per op: ~10 s):
    weights N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), other vectors N(0, 0.1^2). Drawn per
    layer, then stacked where the config scans its layers (the same values in either layout)."""
    rng = np.random.default_rng(seed)
    model = nnx.eval_shape(lambda: TinyGroundingGPT(with_scan_layers(config, False), rngs=nnx.Rngs(0)))

    def init(path, x):
        if len(x.shape) >= 2:
            std = 1.0 / np.sqrt(np.prod(x.shape[:-1]))
            return rng.normal(0.0, std, x.shape).astype(x.dtype)
        base = 1.0 if str(path[-1].key) in ("scale", "lambda1") else 0.0
        return (base + rng.normal(0.0, 0.1, x.shape)).astype(x.dtype)

    params = jax.tree_util.tree_map_with_path(init, nnx.state(model, nnx.Param).to_pure_dict())
    return jax.tree.map(np.asarray, stacked.relayout(params, scanned_parts(config)))


def make_checkpoint(workdir: str) -> tuple[str, dict]:
    """A random tiny TinyGroundingGPT saved the way the trainer leaves it:
    WORKDIR/checkpoints/<step>/params, WORKDIR/checkpoints/tgg_config.json, WORKDIR/tokenizer/.
    Returns (the step directory, the parameters saved there)."""
    texts = [t["value"] for i in range(48) for t in shapes.make_record(0, "train", i)["conversations"]]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=300)
    config = TGGConfig(llm=qwen2.tiny(vocab_size=320, num_layers=1), clip=clip.tiny(num_layers=2),
                       dinov2=dinov2.tiny(num_layers=2), image_token_id=tokenizer.image_id,
                       object_token_id=tokenizer.object_id)
    assert config.llm.vocab_size >= tokenizer.vocab_size
    step_dir = os.path.join(workdir, "checkpoints", "5")
    params = random_params(config)
    checkpoint.save_params(step_dir, params, config)
    shutil.move(os.path.join(step_dir, checkpoint.CONFIG_FILE),
                os.path.join(workdir, "checkpoints", checkpoint.CONFIG_FILE))
    tokenizer.save(os.path.join(workdir, "tokenizer"))
    return step_dir, params
