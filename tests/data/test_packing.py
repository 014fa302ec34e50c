"""Sequence packing: a row worked out by hand, greedy row boundaries, packed rows that give back
every example's tokens/targets/images in placeholder order (as the model reads them), and exact
resume of packed iterators (in process and with worker processes)."""

import json

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from tests.data.pipeline_testdata import BUCKETS, READ, SPEC, shape_records, text_record, tokenizer
from tgg_jax.data import packing, pipeline
from tgg_jax.data.example_spec import ExampleSpec
from tgg_jax.models.tgg import overwrite_placeholders

F, T = False, True


def example(ids, mask, images=(), objects=(), size=2, max_objects=2):
    """Hand-made encoded example; image / object pixels are filled with the given values."""
    out_images = np.zeros((1, size, size, 3), np.uint8)
    out_objects = np.zeros((max_objects, size, size, 3), np.uint8)
    for i, v in enumerate(images):
        out_images[i] = v
    for i, v in enumerate(objects):
        out_objects[i] = v
    return {"input_ids": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, bool),
            "images": out_images, "objects": out_objects, "num_images": np.int32(len(images)),
            "num_objects": np.int32(len(objects))}


def stream(examples):
    return grain.MapDataset.source(examples).to_iter_dataset(READ)


def test_pack_row_by_hand():
    e1 = example([1, 2, 3], [0, 1, 1], images=[10], objects=[11])
    e2 = example([4, 5], [0, 1])  # text only
    e3 = example([6, 7, 8], [0, 0, 1], images=[20], objects=[21, 22])
    row = packing.pack_row([e1, e2, e3], packing.PackingSpec(10, 3, 4), pad_id=9)
    np.testing.assert_array_equal(row["input_ids"], [1, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 2, 2, 3, 3, 3, 0, 0])
    np.testing.assert_array_equal(row["positions"], [0, 1, 2, 0, 1, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(row["targets"], [2, 3, 0, 5, 0, 7, 8, 0, 0, 0])
    np.testing.assert_array_equal(row["target_mask"], [T, T, F, T, F, F, T, F, F, F])
    np.testing.assert_array_equal(row["images"][:, 0, 0, 0], [10, 20, 0])
    np.testing.assert_array_equal(row["objects"][:, 0, 0, 0], [11, 21, 22, 0])
    assert row["images"].shape == (3, 2, 2, 3) and row["objects"].shape == (4, 2, 2, 3)
    assert (row["num_images"], row["num_objects"]) == (2, 3)
    with pytest.raises(ValueError, match="need 8 tokens"):
        packing.pack_row([e1, e2, e3], packing.PackingSpec(7, 3, 4), pad_id=9)


def test_stack_rows_equals_numpy_stack():
    """Copying only the filled image / object slots gives np.stack's batch."""
    rows = [packing.pack_row([example([1, 2], [0, 1], images=[10], objects=[11, 12])],
                             packing.PackingSpec(6, 2, 3), pad_id=9),
            packing.pack_row([example([3], [1]), example([4, 5], [0, 1], images=[20], objects=[21])],
                             packing.PackingSpec(6, 2, 3), pad_id=9)]
    batch = packing.stack_rows(rows)
    assert batch.keys() == rows[0].keys()
    for key, value in batch.items():
        expected = np.stack([r[key] for r in rows])
        assert value.dtype == expected.dtype, key
        np.testing.assert_array_equal(value, expected, err_msg=key)


def hand_stream():
    """Lengths 3 (image), 3 (image), 2, 8, 5, 5 into rows of 10 tokens and one image slot."""
    return [example([1, 1, 1], [0, 1, 1], images=[1]), example([2, 2, 2], [0, 1, 1], images=[2]),
            example([3, 3], [0, 1]), example([4] * 8, [0] + [1] * 7), example([5] * 5, [0, 1, 1, 1, 1]),
            example([6] * 5, [0, 0, 0, 1, 1])]


HAND_SPEC = packing.PackingSpec(max_length=10, max_images=1, max_objects=2)


def segments(row):
    """Token lists of a row's segments, in order."""
    ids, seg = np.asarray(row["input_ids"]), np.asarray(row["segment_ids"])
    return [ids[seg == s].tolist() for s in range(1, int(seg.max()) + 1)]


def test_rows_close_when_tokens_or_image_slots_would_overflow():
    rows = list(packing.pack(stream(hand_stream()), HAND_SPEC, pad_id=0))
    assert [segments(r) for r in rows] == [
        [[1, 1, 1]],                  # the next example's image needs a second slot
        [[2, 2, 2], [3, 3]],          # 5 + 8 tokens > 10
        [[4] * 8],                    # 8 + 5 > 10
        [[5] * 5, [6] * 5],           # exactly 10; the stream ends with a partial row otherwise
    ]


def test_an_example_too_big_for_a_row_raises():
    with pytest.raises(ValueError, match="does not fit in an empty packed row"):
        list(packing.pack(stream([example([1] * 11, [0] * 11)]), HAND_SPEC, pad_id=0))


@pytest.mark.parametrize("k", range(4))
def test_packed_iterator_resumes_exactly_after_every_row(k):
    it = iter(packing.pack(stream(hand_stream()), HAND_SPEC, pad_id=0))
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = list(it)
    resumed = iter(packing.pack(stream(hand_stream()), HAND_SPEC, pad_id=0))
    resumed.set_state(state)
    got = list(resumed)
    assert len(got) == len(expected) == 4 - k
    for a, b in zip(expected, got):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_packed_rows_reproduce_every_example_in_placeholder_order():
    tok = tokenizer()
    records = [r for pair in zip(shape_records(), (text_record(f"t{i}") for i in range(12)))
               for r in pair]
    examples = [pipeline.encode_example(r, tok, SPEC) for r in records]
    spec = packing.PackingSpec(max_length=256, max_images=2, max_objects=3)
    rows = list(packing.pack(stream(examples), spec, tok.endoftext_id))
    assert len(rows) < len(examples)  # something was packed
    position = 0
    for row in rows:
        ids, seg = row["input_ids"], row["segment_ids"]
        assert ids.shape == (256,) and row["images"].shape == (2, 28, 28, 3)
        assert row["objects"].shape == (3, 28, 28, 3)
        # The model's overwrite: slot k's features land on the k-th image run of the row.
        slot_value = jnp.repeat(jnp.arange(1, 3, dtype=jnp.float32), SPEC.image_tokens)[None, :, None]
        written = np.asarray(overwrite_placeholders(jnp.zeros((1, 256, 1)), jnp.asarray(ids)[None],
                                                    tok.image_id, slot_value))[0, :, 0]
        image_slot = object_slot = 0
        for s in range(1, int(seg.max()) + 1):
            e = examples[position]
            position += 1
            where = np.flatnonzero(seg == s)
            n = len(e["input_ids"])
            assert len(where) == n and where[0] + n - 1 == where[-1]  # one contiguous run
            np.testing.assert_array_equal(ids[where], e["input_ids"])
            np.testing.assert_array_equal(row["positions"][where], np.arange(n))
            np.testing.assert_array_equal(row["targets"][where[:-1]], e["input_ids"][1:])
            np.testing.assert_array_equal(row["target_mask"][where[:-1]], e["loss_mask"][1:])
            assert row["targets"][where[-1]] == 0 and not row["target_mask"][where[-1]]
            if e["num_images"]:
                np.testing.assert_array_equal(row["images"][image_slot], e["images"][0])
                assert (written[where][ids[where] == tok.image_id] == image_slot + 1).all()
                image_slot += 1
            k = int(e["num_objects"])
            np.testing.assert_array_equal(row["objects"][object_slot:object_slot + k], e["objects"][:k])
            object_slot += k
        assert (row["num_images"], row["num_objects"]) == (image_slot, object_slot)
        assert not row["images"][image_slot:].any() and not row["objects"][object_slot:].any()
        assert not row["target_mask"][seg == 0].any() and (ids[seg == 0] == tok.endoftext_id).all()
        # Greedy: the row closed because the next example would overflow it.
        if position < len(examples):
            nxt = examples[position]
            assert (int(seg.astype(bool).sum()) + len(nxt["input_ids"]) > 256
                    or image_slot + nxt["num_images"] > 2 or object_slot + nxt["num_objects"] > 3)
    assert position == len(examples)


def packed_train_iter(worker_count=0):
    tok = tokenizer()
    sources = {("shapes", "train"): list(shape_records()),
               ("text", "train"): [text_record(f"t{i}") for i in range(8)]}
    return pipeline.make_train_iterator(
        [("shapes", "train", 2.0), ("text", "train", 1.0)], tokenizer=tok, spec=SPEC, batch_size=2,
        seed=1, buckets=BUCKETS, sources=sources, read_options=READ, shard_index=0, shard_count=1,
        packing=True, packing_spec=packing.PackingSpec(256, 2, 3), worker_count=worker_count,
        prefetch=1)


@pytest.mark.parametrize("worker_count", [0, 2])
def test_packed_train_iterator_resumes_exactly(worker_count):
    it = packed_train_iter(worker_count)
    first = next(it)
    assert first["input_ids"].shape == (2, 256) and first["images"].shape == (2, 2, 28, 28, 3)
    assert first["objects"].shape == (2, 3, 28, 28, 3) and first["num_images"].shape == (2,)
    assert (first["segment_ids"].max(axis=1) > 1).all()
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    resumed = packed_train_iter(worker_count)
    resumed.set_state(state)
    got = [next(resumed) for _ in range(3)]
    if worker_count:
        it.close()
        resumed.close()
    for a, b in zip(expected, got):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_default_packing_spec():
    full = ExampleSpec(image_size=336, image_tokens=576, object_tokens=576,
                                max_length=2048, max_objects=4)
    # 3 image examples of >= 608 tokens fit in 2048; 3 object runs fit, but one example may bring 4
    assert packing.default_packing_spec(full) == packing.PackingSpec(2048, 3, 4)
    pooled = ExampleSpec(336, 576, 144, 2048, 4)
    assert packing.default_packing_spec(pooled) == packing.PackingSpec(2048, 3, 12)
