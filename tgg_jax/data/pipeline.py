"""Grain input pipeline: random-access sources -> weighted mixture -> examples -> batches -> device.

Each arrow is one function (SPEC §2, STYLE "the data path reads top to bottom"):

    open_source          a TFDS ArrayRecord source of one (dataset, split) (any random-access
                         sequence of SPEC §2 records works in its place, e.g. a list)
    source_dataset       this process's shard, shuffled with its own seed, repeated, encoded
    mixture              IterDataset.mix of the sources by weight
    pad_batch            fixed-length (bucketed) padding into host batches, or
    packing.pack         several examples per fixed-length row (config data.packing)
    make_train_iterator  the whole chain, multiprocess prefetch; its state saves and restores exactly
    to_global            per-host numpy batches -> global jax.Arrays on the mesh

A record that cannot be decoded or encoded (corrupt image, malformed conversation, placeholder
mismatch, too long) is skipped: counted in SKIPPED by reason and logged with its source and id;
one record never stops training. A source whose records keep failing (`max_consecutive_skips` in a
row) raises BadSourceError naming it, instead of spinning forever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from tgg_jax.data import builders  # noqa: F401  (registers the project's builders with TFDS)
from tgg_jax.data import packing as packing_lib
from tgg_jax.data.example_spec import ExampleSpec
from tgg_jax.data.preprocess import BadImageError, crop_object, load_image, preprocess_image
from tgg_jax.data.template import TemplateError, encode_conversation
from tgg_jax.data.tokenizer import TggTokenizer

# reason (exception class) -> records skipped in this process. With worker_count > 0 the
# skipping happens, and is counted and logged, in the Grain worker processes.
SKIPPED: Counter = Counter()
MAX_CONSECUTIVE_SKIPS = 1000
# Per source and process: 4 decoding threads, 64 examples read ahead. Grain's default (16, 500)
# would hold ~500 x (1 + max_objects) decoded 336 px images per source per worker.
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=64)


class BadSourceError(RuntimeError):
    """A source none of whose last `max_consecutive_skips` records could be read."""


def open_source(dataset: str, split: str, data_dir: str):
    """Random-access TFDS source (ArrayRecord; no TensorFlow) for one split."""
    return tfds.data_source(dataset, split=split, data_dir=data_dir)


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _record_id(record) -> str:
    try:
        return _text(record.get("id", "?"))
    except Exception:  # noqa: BLE001 — only used to name a record in a message
        return "?"


def conversations_of(record: dict) -> list[dict]:
    """The record's turns as [{from, value}] with str values (TFDS gives bytes, and a Sequence of
    dicts reads back as a dict of lists)."""
    conv = record["conversations"]
    if isinstance(conv, dict):
        if len(conv["from"]) != len(conv["value"]):
            raise TemplateError(f"record {_record_id(record)!r}: {len(conv['from'])} 'from' "
                                f"entries but {len(conv['value'])} 'value' entries")
        return [{"from": _text(f), "value": _text(v)} for f, v in zip(conv["from"], conv["value"])]
    return [{"from": _text(t["from"]), "value": _text(t["value"])} for t in conv]


def encode_example(record: dict, tokenizer: TggTokenizer, spec: ExampleSpec,
                   rng: np.random.Generator | None = None) -> dict:
    """One SPEC §2 record -> example; raises (naming the record) on bad input.

    Returns input_ids int32 [n], loss_mask bool [n], images uint8 [1, S, S, 3],
    objects uint8 [max_objects, S, S, 3] (real ones first), num_images, num_objects int32.
    """
    record_id = _record_id(record)
    image_bytes = record.get("image", b"")
    has_image = image_bytes is not None and len(image_bytes) > 0
    # Builders write width/height 0 for text-only records; a size with no bytes is a lost image.
    if not has_image and int(record.get("width", 0) or 0) > 0:
        raise BadImageError(f"record {record_id!r}: empty image data for a "
                            f"{int(record['width'])}x{int(record.get('height', 0))} image")
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
        img = load_image(bytes(image_bytes), source=f"record {record_id!r}", alpha=spec.alpha)
        images[0] = preprocess_image(img, spec.image_size)
        for i, box in enumerate(boxes):
            crop = crop_object(img, box, spec.object_margin, rng=rng, jitter=spec.object_jitter)
            objects[i] = preprocess_image(crop, spec.image_size)
    elif len(boxes):
        raise TemplateError(f"record {record_id!r}: objects given without an image")
    return {"input_ids": encoded.input_ids, "loss_mask": encoded.loss_mask, "images": images,
            "objects": objects, "num_images": np.int32(has_image), "num_objects": np.int32(len(boxes))}


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Stands in the stream for a record that could not be encoded (Grain drops None silently,
    which would hide the skip from the counter and let a broken source spin forever)."""
    source: str
    record_id: str
    reason: str
    message: str


class EncodeOrSkip(grain.transforms.RandomMap):
    """encode_example, turning any failure into a Skipped marker."""

    def __init__(self, tokenizer: TggTokenizer, spec: ExampleSpec, source: str):
        self.tokenizer, self.spec, self.source = tokenizer, spec, source

    def random_map(self, record, rng: np.random.Generator):
        try:
            return encode_example(record, self.tokenizer, self.spec, rng)
        except Exception as e:  # noqa: BLE001 — one bad record must never stop training
            return Skipped(self.source, _record_id(record), type(e).__name__, str(e))


class _DropSkippedIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, source: str, max_consecutive: int):
        super().__init__(parent)
        self._source, self._max_consecutive = source, max_consecutive

    def __next__(self) -> dict:
        for _ in range(self._max_consecutive):
            element = next(self._parent)
            if not isinstance(element, Skipped):
                return element
            SKIPPED[element.reason] += 1
            logging.warning("skipping record %s of %s (%s: %s); %d skipped so far",
                            element.record_id, element.source, element.reason, element.message,
                            sum(SKIPPED.values()))
        raise BadSourceError(
            f"source {self._source}: the last {self._max_consecutive} records in a row could not "
            f"be read (last: record {element.record_id!r}, {element.reason}: {element.message}); "
            f"check the source's files or remove it from the mixture")

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


class DropSkipped(grain.IterDataset):
    """Counts and logs Skipped markers and drops them; BadSourceError after `max_consecutive`."""

    def __init__(self, parent: grain.IterDataset, source: str, max_consecutive: int):
        super().__init__(parent)
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive}")
        self._source, self._max_consecutive = source, max_consecutive

    def __iter__(self) -> _DropSkippedIterator:
        return _DropSkippedIterator(self._parent.__iter__(), self._source, self._max_consecutive)


def _seed(seed: int, name: str) -> int:
    """A per-source seed: each source is shuffled with its own stream."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= index < count:
        raise ValueError(f"shard_index {index} is not in [0, {count})")
    return index, count


def source_dataset(source, name: str, tokenizer: TggTokenizer, spec: ExampleSpec, *, seed: int,
                   shuffle: bool = True, repeat: bool = True, limit: int = 0,
                   shard_index: int | None = None, shard_count: int | None = None,
                   read_options: grain.ReadOptions | None = None,
                   max_consecutive_skips: int = MAX_CONSECUTIVE_SKIPS) -> grain.IterDataset:
    """One source as a stream of encoded examples: this process's shard (records
    shard_index, shard_index + shard_count, ... of the first `limit` (0: all); default: JAX
    process index / count), shuffled with a seed of its own, repeated endlessly (reshuffled each
    epoch), bad records skipped."""
    index, count = _shard(shard_index, shard_count)
    ds = grain.MapDataset.source(source)
    if limit:
        ds = ds[:limit]
    ds = ds[index::count]  # each host reads its own records
    if len(ds) == 0:
        raise ValueError(f"source {name}: no records for shard {index} of {count} "
                         f"({len(source)} records in the source)")
    if shuffle:
        ds = ds.shuffle(seed=_seed(seed, name))
    if repeat:
        ds = ds.repeat(None)
    ds = ds.random_map(EncodeOrSkip(tokenizer, spec, name), seed=_seed(seed + 1, name))
    ds = ds.to_iter_dataset(read_options or READ_OPTIONS)
    return DropSkipped(ds, name, max_consecutive_skips)


def mixture(datasets: Sequence[grain.IterDataset], weights: Sequence[float]) -> grain.IterDataset:
    """Interleave the streams so that source i gives a weights[i] / sum(weights) share."""
    if len(datasets) != len(weights) or any(w <= 0 for w in weights):
        raise ValueError(f"need one positive weight per source, got {list(weights)} for "
                         f"{len(datasets)} sources")
    if len(datasets) == 1:
        return datasets[0]
    total = float(sum(weights))
    return grain.IterDataset.mix(list(datasets), [w / total for w in weights])


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` tokens."""
    for b in sorted(buckets):
        if length <= b:
            return b
    raise ValueError(f"sequence of {length} tokens is longer than the largest bucket {max(buckets)}")


def pad_batch(examples: Sequence[dict], buckets: Sequence[int], pad_id: int = 0) -> dict:
    """Right-pad examples to the bucket of the longest; next-token targets and their mask.

    Returns input_ids, positions, segment_ids (1 real / 0 pad), targets, target_mask [B, T]
    (position j predicts token j + 1; target_mask[j] = loss_mask[j + 1]);
    images [B, 1, S, S, 3], objects [B, K, S, S, 3] uint8; num_images, num_objects [B].
    """
    t = bucket_length(max(len(e["input_ids"]) for e in examples), buckets)
    out = packing_lib.empty_rows(len(examples), t)
    out["input_ids"][:] = pad_id
    for i, e in enumerate(examples):
        packing_lib.write_segment(out, i, 0, 1, np.asarray(e["input_ids"]), np.asarray(e["loss_mask"]))
    for k in ("num_images", "num_objects"):
        out[k] = np.stack([np.int32(e[k]) for e in examples])
    out["images"] = packing_lib.stack_slots([e["images"] for e in examples], out["num_images"])
    out["objects"] = packing_lib.stack_slots([e["objects"] for e in examples], out["num_objects"])
    return out


@dataclasses.dataclass(frozen=True)
class PadBatch:
    """pad_batch as a picklable batch_fn (Grain ships the pipeline to worker processes)."""
    buckets: tuple[int, ...]
    pad_id: int

    def __call__(self, examples: Sequence[dict]) -> dict:
        return pad_batch(examples, self.buckets, self.pad_id)


@dataclasses.dataclass(frozen=True)
class DieWithParent:
    """Grain worker init: the worker exits within ~1 s of the process that started it dying.

    Without it, a trainer killed with SIGKILL leaves its workers (hundreds of MB each) running
    as orphans. The worker polls its parent id (reparenting changes it) instead of Linux's
    PR_SET_PDEATHSIG, which fires when the *thread* that started the worker ends."""
    parent_pid: int
    poll_seconds: float = 1.0

    def __call__(self, worker_index: int = 0, worker_count: int = 0) -> None:
        if os.getppid() != self.parent_pid:  # the parent died while this worker started
            os._exit(1)

        def watch():
            while os.getppid() == self.parent_pid:
                threading.Event().wait(self.poll_seconds)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _parse_absl_flags() -> None:
    """Grain's worker processes read absl flags, which must count as parsed in the parent."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_iterator(mixture_spec: Sequence[tuple[str, str, float]], *, tokenizer: TggTokenizer,
                        spec: ExampleSpec, batch_size: int, seed: int, buckets: Sequence[int],
                        data_dir: str = "", sources: Mapping[tuple[str, str], Any] | None = None,
                        worker_count: int = 0, prefetch: int = 2, packing: bool = False,
                        packing_spec: packing_lib.PackingSpec | None = None,
                        shard_index: int | None = None, shard_count: int | None = None,
                        read_options: grain.ReadOptions | None = None,
                        max_consecutive_skips: int = MAX_CONSECUTIVE_SKIPS) -> grain.DatasetIterator:
    """The training stream for this host; `batch_size` is the per-host batch.

    mixture_spec: ((dataset, split, weight), ...); each (dataset, split) is taken from `sources`
    when there, else opened with open_source(dataset, split, data_dir). packing=False: batches
    as pad_batch gives them; packing=True: rows of packing_spec.max_length tokens (default
    packing.default_packing_spec(spec)), images [B, max_images, S, S, 3], objects
    [B, max_objects, S, S, 3], same keys. Returns a Grain DatasetIterator whose
    get_state/set_state (grain.checkpoint) restore the stream exactly.
    """
    sources = sources or {}
    datasets = []
    for name, split, _ in mixture_spec:
        source = sources[(name, split)] if (name, split) in sources else open_source(name, split, data_dir)
        datasets.append(source_dataset(
            source, f"{name}/{split}", tokenizer, spec, seed=seed, shard_index=shard_index,
            shard_count=shard_count, read_options=read_options,
            max_consecutive_skips=max_consecutive_skips))
    ds = mixture(datasets, [w for _, _, w in mixture_spec])
    if packing:
        ds = packing_lib.pack(ds, packing_spec or packing_lib.default_packing_spec(spec),
                              tokenizer.endoftext_id)
        ds = ds.batch(batch_size, drop_remainder=True, batch_fn=packing_lib.stack_rows)
    else:
        ds = ds.batch(batch_size, drop_remainder=True,
                      batch_fn=PadBatch(tuple(buckets), tokenizer.endoftext_id))
    if worker_count > 0:
        _parse_absl_flags()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                         per_worker_buffer_size=prefetch),
                            worker_init_fn=DieWithParent(os.getpid()))
    return iter(ds)


def _empty_example(spec: ExampleSpec, pad_id: int) -> dict:
    """One padding token with no loss: fills the eval batches of a host that ran out."""
    return {"input_ids": np.asarray([pad_id], np.int32), "loss_mask": np.zeros(1, np.bool_),
            "images": np.zeros((1, spec.image_size, spec.image_size, 3), np.uint8),
            "objects": np.zeros((spec.max_objects, spec.image_size, spec.image_size, 3), np.uint8),
            "num_images": np.int32(0), "num_objects": np.int32(0)}


def make_eval_batches(dataset: str, split: str, *, tokenizer: TggTokenizer, spec: ExampleSpec,
                      batch_size: int, buckets: Sequence[int], data_dir: str = "", limit: int = 0,
                      source=None, shard_index: int | None = None, shard_count: int | None = None,
                      read_options: grain.ReadOptions | None = None) -> Iterator[dict]:
    """One pass over the first `limit` (0: all) records of an eval split, this host's shard,
    in order, in pad_batch batches (`source` replaces open_source when given).

    Every host yields the same number of batches, ceil(ceil(n / hosts) / batch_size), so
    to_global calls line up across hosts; the slots of a host that ran out (its shard is smaller
    or had bad records) hold one padding token with no loss, so nothing is counted twice.
    """
    source = open_source(dataset, split, data_dir) if source is None else source
    index, count = _shard(shard_index, shard_count)
    n = len(source) if not limit else min(limit, len(source))
    largest_shard = -(-n // count)
    num_batches = -(-largest_shard // batch_size)
    examples = iter(())
    if index < n:  # a shard can be empty when the split has fewer records than hosts
        examples = iter(source_dataset(source, f"{dataset}/{split}", tokenizer, spec, seed=0,
                                       shuffle=False, repeat=False, limit=n, shard_index=index,
                                       shard_count=count, read_options=read_options))
    filler = _empty_example(spec, tokenizer.endoftext_id)
    for _ in range(num_batches):
        batch = [next(examples, filler) for _ in range(batch_size)]
        yield pad_batch(batch, buckets, tokenizer.endoftext_id)


def _agree_on_length(batch: dict) -> dict:
    """Pad the token arrays to the longest bucket among hosts: a global array needs one shape,
    and each host buckets its own examples."""
    from jax.experimental import multihost_utils
    t = batch["input_ids"].shape[1]
    longest = int(np.max(multihost_utils.process_allgather(np.int32(t))))
    if longest == t:
        return batch
    widths = ((0, 0), (0, longest - t))
    return {k: np.pad(v, widths) if k in packing_lib.ROW_KEYS else v for k, v in batch.items()}


def to_global(batch: dict, mesh, batch_axes=("data", "fsdp")) -> dict:
    """Per-host numpy batch -> global jax.Arrays, the batch axis sharded over `batch_axes`
    (hosts' batches stacked in process order)."""
    if jax.process_count() > 1:
        batch = _agree_on_length(batch)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(batch_axes))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
