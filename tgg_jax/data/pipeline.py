"""Grain input pipeline: TFDS ArrayRecord sources -> weighted mixture -> examples -> batches -> device.

Each arrow is one function (SPEC §2, STYLE "the data path reads top to bottom"):

    open_source        a TFDS data source of one (dataset, split), sharded by JAX process
    source_dataset     shuffled with its own seed, repeated, turned into examples
    mixture            IterDataset.mix of the sources by weight
    batch_examples     fixed-length (bucketed) padding into host batches
    make_train_iterator  the whole chain, multiprocess prefetch; its state saves and restores exactly
    to_global          per-host numpy batches -> global jax.Arrays on the mesh

A record that cannot be decoded or encoded (corrupt image, malformed conversation, placeholder
mismatch, too long) is skipped: it is counted and logged with its source and id; the pipeline
never dies on one record.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Sequence

import grain
import jax
import numpy as np
from absl import logging

from tgg_jax.data.preprocess import crop_object, load_image, preprocess_image
from tgg_jax.data.template import TemplateError, encode_conversation
from tgg_jax.data.tokenizer import TggTokenizer

SKIPPED = Counter()  # reason -> count, in the process that ran the transform


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What the model expects of one example (derived from the model config)."""
    image_size: int
    image_tokens: int
    object_tokens: int
    max_length: int
    max_objects: int
    object_margin: float = 0.1
    object_jitter: float = 0.0  # relative jitter of the crop margin; training only


def open_source(dataset: str, split: str, data_dir: str):
    """Random-access TFDS source (ArrayRecord; no TensorFlow) for one split."""
    import tensorflow_datasets as tfds
    import tgg_jax.data.builders  # noqa: F401  (registers the project's builders)
    return tfds.data_source(dataset, split=split, data_dir=data_dir)


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def conversations_of(record: dict) -> list[dict]:
    conv = record["conversations"]
    if isinstance(conv, dict):  # tfds Sequence of dicts reads back as a dict of lists
        return [{"from": _text(f), "value": _text(v)} for f, v in zip(conv["from"], conv["value"])]
    return [{"from": _text(t["from"]), "value": _text(t["value"])} for t in conv]


def encode_example(record: dict, tokenizer: TggTokenizer, spec: ExampleSpec,
                   rng: np.random.Generator | None = None) -> dict:
    """One TFDS record -> {input_ids, loss_mask, images, objects, id}; raises on bad input."""
    record_id = _text(record.get("id", "?"))
    image_bytes = record.get("image", b"")
    has_image = image_bytes is not None and len(image_bytes) > 0
    boxes = np.asarray(record.get("objects", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    encoded = encode_conversation(
        conversations_of(record), tokenizer, num_images=int(has_image), num_objects=len(boxes),
        image_tokens=spec.image_tokens, object_tokens=spec.object_tokens,
        max_length=spec.max_length, record_id=record_id)
    boxes = boxes[: encoded.num_objects_kept]
    if len(boxes) > spec.max_objects:
        raise TemplateError(f"record {record_id!r}: {len(boxes)} objects > max_objects {spec.max_objects}")
    images = np.zeros((1, spec.image_size, spec.image_size, 3), np.uint8)
    objects = np.zeros((spec.max_objects, spec.image_size, spec.image_size, 3), np.uint8)
    if has_image:
        img = load_image(bytes(image_bytes), source=record_id)
        images[0] = preprocess_image(img, spec.image_size)
        for i, box in enumerate(boxes):
            crop = crop_object(img, box, spec.object_margin, rng=rng, jitter=spec.object_jitter)
            objects[i] = preprocess_image(crop, spec.image_size)
    elif len(boxes):
        raise TemplateError(f"record {record_id!r}: objects given without an image")
    return {"input_ids": encoded.input_ids, "loss_mask": encoded.loss_mask, "images": images,
            "objects": objects, "num_images": np.int32(has_image), "num_objects": np.int32(len(boxes))}


class EncodeOrSkip(grain.transforms.RandomMap):
    """encode_example, turning any failure into a logged, counted skip marker."""

    def __init__(self, tokenizer: TggTokenizer, spec: ExampleSpec, source: str):
        self.tokenizer, self.spec, self.source = tokenizer, spec, source

    def random_map(self, record, rng: np.random.Generator):
        try:
            return encode_example(record, self.tokenizer, self.spec, rng)
        except Exception as e:  # noqa: BLE001 — one bad record must never stop training
            reason = type(e).__name__
            SKIPPED[reason] += 1
            logging.warning("skipping record %s of %s (%s: %s); %d skipped so far",
                            _text(record.get("id", "?")), self.source, reason, e, sum(SKIPPED.values()))
            return None


def _seed(seed: int, name: str) -> int:
    """A per-source seed: each source is shuffled with its own stream."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def source_dataset(source, name: str, tokenizer: TggTokenizer, spec: ExampleSpec, *, seed: int,
                   shuffle: bool = True, repeat: bool = True) -> grain.IterDataset:
    """One source as an endless shuffled stream of encoded examples (this process's shard)."""
    ds = grain.MapDataset.source(source)
    index, count = jax.process_index(), jax.process_count()
    ds = ds[index::count]  # each host reads its own shard
    if shuffle:
        ds = ds.shuffle(seed=_seed(seed, name))
    if repeat:
        ds = ds.repeat(None)
    ds = ds.random_map(EncodeOrSkip(tokenizer, spec, name), seed=_seed(seed + 1, name))
    return ds.to_iter_dataset().filter(lambda x: x is not None)


def mixture(datasets: Sequence[grain.IterDataset], weights: Sequence[float]) -> grain.IterDataset:
    if len(datasets) == 1:
        return datasets[0]
    total = float(sum(weights))
    return grain.IterDataset.mix(list(datasets), [w / total for w in weights])


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if length <= b:
            return b
    raise ValueError(f"sequence of {length} tokens is longer than the largest bucket {max(buckets)}")


def pad_batch(examples: Sequence[dict], buckets: Sequence[int], pad_id: int = 0) -> dict:
    """Right-pad examples to the bucket of the longest; next-token targets and their mask.

    Returns input_ids, positions, segment_ids (1 real / 0 pad), targets, target_mask [B, T];
    images [B, 1, S, S, 3], objects [B, K, S, S, 3] uint8.
    """
    t = bucket_length(max(len(e["input_ids"]) for e in examples), buckets)
    b = len(examples)
    out = {k: np.zeros((b, t), np.int32) for k in ("input_ids", "positions", "segment_ids", "targets")}
    out["input_ids"][:] = pad_id
    out["target_mask"] = np.zeros((b, t), np.bool_)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        out["input_ids"][i, :n] = e["input_ids"]
        out["positions"][i, :n] = np.arange(n)
        out["segment_ids"][i, :n] = 1
        # position j predicts token j + 1; the loss covers tokens marked by the template
        out["targets"][i, : n - 1] = e["input_ids"][1:]
        out["target_mask"][i, : n - 1] = e["loss_mask"][1:]
    for k in ("images", "objects", "num_images", "num_objects"):
        out[k] = np.stack([e[k] for e in examples])
    return out


def make_train_iterator(mixture_spec: Sequence[tuple[str, str, float]], *, data_dir: str,
                        tokenizer: TggTokenizer, spec: ExampleSpec, batch_size: int, seed: int,
                        buckets: Sequence[int], worker_count: int = 0, prefetch: int = 2):
    """The training stream for this host: `batch_size` is the per-host batch.

    Returns a Grain DatasetIterator (checkpointable with grain.checkpoint).
    """
    datasets = [source_dataset(open_source(name, split, data_dir), f"{name}/{split}", tokenizer, spec,
                               seed=seed)
                for name, split, _ in mixture_spec]
    ds = mixture(datasets, [w for _, _, w in mixture_spec])
    ds = ds.batch(batch_size, drop_remainder=True,
                  batch_fn=lambda xs: pad_batch(xs, buckets, tokenizer.endoftext_id))
    if worker_count > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                         per_worker_buffer_size=prefetch))
    return iter(ds)


def make_eval_batches(dataset: str, split: str, *, data_dir: str, tokenizer: TggTokenizer,
                      spec: ExampleSpec, batch_size: int, buckets: Sequence[int], limit: int = 0):
    """One pass over an eval split (this host's shard), in order, in padded batches.

    The last batch is filled with copies of its first example whose targets are masked out,
    so shapes stay fixed and nothing is counted twice.
    """
    ds = source_dataset(open_source(dataset, split, data_dir), f"{dataset}/{split}", tokenizer, spec,
                        seed=0, shuffle=False, repeat=False)
    batch = []
    for n, example in enumerate(ds):
        if limit and n >= limit:
            break
        batch.append(example)
        if len(batch) == batch_size:
            yield pad_batch(batch, buckets, tokenizer.endoftext_id)
            batch = []
    if batch:
        filler = dict(batch[0], loss_mask=np.zeros_like(batch[0]["loss_mask"]))
        yield pad_batch(batch + [filler] * (batch_size - len(batch)), buckets, tokenizer.endoftext_id)


def to_global(batch: dict, mesh, batch_axes=("data", "fsdp")) -> dict:
    """Per-host numpy batch -> global jax.Arrays sharded on the batch axis over `batch_axes`."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(batch_axes))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
