"""Sequence packing: several encoded examples share one fixed-length row (config data.packing).

A row holds examples back to back, in stream order:

    input_ids    [T]  the examples' tokens, then padding
    segment_ids  [T]  1, 1, ..., 2, 2, ..., n, then 0 on padding (attention stays inside a segment)
    positions    [T]  0, 1, ... restarting at every segment (rotary positions per example)
    targets      [T]  token j + 1 of the same segment; 0 on each segment's last token and padding
    target_mask  [T]  the example's loss_mask shifted by one; never crosses a segment boundary
    images       [max_images, S, S, 3]   the examples' real images, concatenated in order
    objects      [max_objects, S, S, 3]  the examples' real object crops, concatenated in order

The model overwrites the k-th `<image>` (`<object>`) run of a row with the k-th image (object)
slot (tgg_jax.models.tgg.overwrite_placeholders), so slots follow the placeholders' order. Packing
is greedy and keeps the stream order: a row closes when the next example's tokens or images or
objects would overflow it, and that example opens the next row.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import grain
import numpy as np

ROW_KEYS = ("input_ids", "positions", "segment_ids", "targets", "target_mask")


@dataclasses.dataclass(frozen=True)
class PackingSpec:
    """Capacity of one packed row: tokens, global-image slots, object slots."""
    max_length: int
    max_images: int
    max_objects: int

    def __post_init__(self):
        if self.max_length < 2 or self.max_images < 1 or self.max_objects < 0:
            raise ValueError(f"invalid packing spec {self}")


# The ChatML system turn plus one user/assistant header pair alone take ~30 Qwen2.5 tokens, so an
# example with an image is at least image_tokens + this long: more image slots would stay empty.
MIN_EXAMPLE_OVERHEAD = 32


def default_packing_spec(spec) -> PackingSpec:
    """Rows of spec.max_length tokens with as many image slots as image examples can fit
    (3 for 576-token images in 2048) and max_objects object slots per image, no more than
    object runs fit in a row (spec: example_spec.ExampleSpec)."""
    images = max(1, spec.max_length // (spec.image_tokens + MIN_EXAMPLE_OVERHEAD))
    objects = spec.max_objects * images
    if spec.object_tokens:
        objects = min(objects, spec.max_length // spec.object_tokens)
    return PackingSpec(spec.max_length, images, max(objects, spec.max_objects))


def empty_rows(batch: int, length: int) -> dict:
    """Zeroed token arrays [batch, length] of one batch; input_ids filled by the caller."""
    rows = {k: np.zeros((batch, length), np.int32) for k in ROW_KEYS if k != "target_mask"}
    rows["target_mask"] = np.zeros((batch, length), np.bool_)
    return rows


def write_segment(rows: dict, row: int, start: int, segment: int, input_ids: np.ndarray,
                  loss_mask: np.ndarray) -> int:
    """Write one example at rows[*][row, start:]; returns the slot after it.

    Position j predicts token j + 1 of the same example, so the target and loss mask are the
    tokens and mask shifted left by one; the example's last slot predicts nothing.
    """
    n = len(input_ids)
    end = start + n
    rows["input_ids"][row, start:end] = input_ids
    rows["positions"][row, start:end] = np.arange(n)
    rows["segment_ids"][row, start:end] = segment
    rows["targets"][row, start:end - 1] = input_ids[1:]
    rows["target_mask"][row, start:end - 1] = loss_mask[1:]
    return end


def _cost(example: dict) -> tuple[int, int, int]:
    return len(example["input_ids"]), int(example["num_images"]), int(example["num_objects"])


def check_fits(example: dict, packing: PackingSpec) -> None:
    tokens, images, objects = _cost(example)
    if tokens > packing.max_length or images > packing.max_images or objects > packing.max_objects:
        raise ValueError(f"an example of {tokens} tokens, {images} images, {objects} objects does "
                         f"not fit in an empty packed row {packing}")


def pack_row(examples: Sequence[dict], packing: PackingSpec, pad_id: int) -> dict:
    """Examples (encode_example output) -> one packed row (see module doc); raises if they
    do not fit together."""
    tokens, images, objects = (sum(c) for c in zip(*map(_cost, examples)))
    if tokens > packing.max_length or images > packing.max_images or objects > packing.max_objects:
        raise ValueError(f"{len(examples)} examples need {tokens} tokens, {images} images, "
                         f"{objects} objects; the row holds {packing}")
    rows = empty_rows(1, packing.max_length)
    rows["input_ids"][:] = pad_id
    size = examples[0]["images"].shape[1:]
    out_images = np.zeros((packing.max_images, *size), np.uint8)
    out_objects = np.zeros((packing.max_objects, *size), np.uint8)
    start = image_slot = object_slot = 0
    for segment, e in enumerate(examples, start=1):
        start = write_segment(rows, 0, start, segment, np.asarray(e["input_ids"]),
                              np.asarray(e["loss_mask"]))
        ni, no = int(e["num_images"]), int(e["num_objects"])
        out_images[image_slot:image_slot + ni] = e["images"][:ni]
        out_objects[object_slot:object_slot + no] = e["objects"][:no]
        image_slot, object_slot = image_slot + ni, object_slot + no
    row = {k: v[0] for k, v in rows.items()}
    row.update(images=out_images, objects=out_objects, num_images=np.int32(image_slot),
               num_objects=np.int32(object_slot))
    return row


class _PackIterator(grain.DatasetIterator):
    """Greedy packing. At most one example is held between rows (the one that did not fit);
    its state is the parent's state from just before it was drawn, so a restored iterator
    draws it again and continues exactly."""

    def __init__(self, parent: grain.DatasetIterator, packing: PackingSpec, pad_id: int):
        super().__init__(parent)
        self._packing, self._pad_id = packing, pad_id
        self._carry: dict | None = None
        self._carry_state = None

    def __next__(self) -> dict:
        row, tokens, images, objects = [], 0, 0, 0
        while True:
            if self._carry is not None:
                example, self._carry = self._carry, None
            else:
                state = copy.deepcopy(self._parent.get_state())
                try:
                    example = next(self._parent)
                except StopIteration:
                    if row:
                        break
                    raise
                check_fits(example, self._packing)
            t, i, o = _cost(example)
            if row and (tokens + t > self._packing.max_length or images + i > self._packing.max_images
                        or objects + o > self._packing.max_objects):
                self._carry, self._carry_state = example, state
                break
            row.append(example)
            tokens, images, objects = tokens + t, images + i, objects + o
        return pack_row(row, self._packing, self._pad_id)

    def get_state(self):
        parent = self._carry_state if self._carry is not None else self._parent.get_state()
        return {"parent": copy.deepcopy(parent)}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._carry, self._carry_state = None, None

    def __str__(self) -> str:
        return f"PackIterator({self._packing})"


class PackIterDataset(grain.IterDataset):
    """Checkpointable Grain transform: a stream of encoded examples -> a stream of packed rows."""

    def __init__(self, parent: grain.IterDataset, packing: PackingSpec, pad_id: int):
        super().__init__(parent)
        self._packing, self._pad_id = packing, pad_id

    def __iter__(self) -> _PackIterator:
        return _PackIterator(self._parent.__iter__(), self._packing, self._pad_id)

    def __str__(self) -> str:
        return f"PackIterDataset({self._packing})"


def pack(ds: grain.IterDataset, packing: PackingSpec, pad_id: int) -> grain.IterDataset:
    """Packed rows of `ds`'s examples; batch them with IterDataset.batch and batch_fn=stack_rows
    (they all have one shape)."""
    return PackIterDataset(ds, packing, pad_id)


def stack_slots(arrays: Sequence[np.ndarray], counts: Sequence[int]) -> np.ndarray:
    """np.stack of image-slot arrays [K, S, S, 3] whose slots from counts[i] on are zero, copying
    only the filled slots: most object slots are empty, and stacking them would write (and read)
    every page of the batch, a third of the host's time per stage-3 example."""
    out = np.zeros((len(arrays), *arrays[0].shape), arrays[0].dtype)
    for i, (a, n) in enumerate(zip(arrays, counts)):
        out[i, :n] = a[:n]
    return out


def stack_rows(rows: Sequence[dict]) -> dict:
    """Packed rows -> one batch: np.stack of every key, images and objects by stack_slots."""
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in ("images", "objects")}
    batch["images"] = stack_slots([r["images"] for r in rows], batch["num_images"])
    batch["objects"] = stack_slots([r["objects"] for r in rows], batch["num_objects"])
    return batch
