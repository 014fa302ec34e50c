"""Grain input pipeline on in-memory sources (lists of SPEC §2 records): encoding, hand-worked
padding and targets, per-process shards, per-source shuffles, mixture proportions, bad records,
exact resume with and without worker processes, eval batches, and global arrays on 8 CPU devices."""

import json
import logging
from collections import Counter

import jax
import numpy as np
import pytest

from tests.data.pipeline_testdata import BUCKETS, READ, SPEC, shape_records, tag_of, text_record, \
    tokenizer
from tgg_jax.data import pipeline
from tgg_jax.data.preprocess import crop_object, load_image, preprocess_image
from tgg_jax.sharding import make_mesh


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def tags(tok, examples):
    return [tag_of(tok, e["input_ids"]) for e in examples]


def stream(tok, records, name="src/train", **kw):
    return pipeline.source_dataset(records, name, tok, SPEC, read_options=READ, **kw)


def train_iter(tok, records, **kw):
    return pipeline.make_train_iterator([("shapes", "train", 1.0)], tokenizer=tok, spec=SPEC,
                                        batch_size=4, seed=3, buckets=BUCKETS, read_options=READ,
                                        sources={("shapes", "train"): records}, **kw)


# --- one record -> one example ------------------------------------------------------------------

def test_encode_example_places_image_and_object_crops(tok):
    record = next(r for r in shape_records() if len(r["objects"]) == 1)
    e = pipeline.encode_example(record, tok, SPEC)
    ids = e["input_ids"]
    assert (ids == tok.image_id).sum() == SPEC.image_tokens
    assert (ids == tok.object_id).sum() == SPEC.object_tokens
    assert len(ids) == len(e["loss_mask"]) <= SPEC.max_length
    assert e["num_images"] == 1 and e["num_objects"] == 1
    img = load_image(record["image"])
    assert np.array_equal(e["images"][0], preprocess_image(img, SPEC.image_size))
    crop = crop_object(img, record["objects"][0], SPEC.object_margin)
    assert np.array_equal(e["objects"][0], preprocess_image(crop, SPEC.image_size))
    assert not e["objects"][1:].any()
    # The loss covers the answer: decoding the masked tokens gives it back.
    answer = record["conversations"][1]["value"]
    assert tok.decode(ids[e["loss_mask"]]).startswith(answer)


def test_text_only_record_has_no_image(tok):
    e = pipeline.encode_example(text_record("t1"), tok, SPEC)
    assert e["num_images"] == 0 and not e["images"].any()
    assert tok.image_id not in e["input_ids"]


# --- padding ------------------------------------------------------------------------------------

def test_pad_batch_by_hand():
    size = (1, 2, 2, 3)
    e1 = {"input_ids": np.array([10, 11, 12, 13]), "loss_mask": np.array([0, 0, 1, 1], bool),
          "images": np.full(size, 1, np.uint8), "objects": np.zeros((2, 2, 2, 3), np.uint8),
          "num_images": np.int32(1), "num_objects": np.int32(0)}
    e2 = {"input_ids": np.array([20, 21, 22, 23, 24, 25]),
          "loss_mask": np.array([0, 0, 0, 1, 1, 0], bool),
          "images": np.full(size, 2, np.uint8), "objects": np.full((2, 2, 2, 3), 3, np.uint8),
          "num_images": np.int32(1), "num_objects": np.int32(2)}
    b = pipeline.pad_batch([e1, e2], buckets=(4, 8, 16), pad_id=99)
    F, T = False, True
    np.testing.assert_array_equal(b["input_ids"], [[10, 11, 12, 13, 99, 99, 99, 99],
                                                   [20, 21, 22, 23, 24, 25, 99, 99]])
    np.testing.assert_array_equal(b["positions"], [[0, 1, 2, 3, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 0, 0]])
    np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]])
    # position j predicts token j + 1; its loss is on iff token j + 1 is an answer token
    np.testing.assert_array_equal(b["targets"], [[11, 12, 13, 0, 0, 0, 0, 0],
                                                 [21, 22, 23, 24, 25, 0, 0, 0]])
    np.testing.assert_array_equal(b["target_mask"], [[F, T, T, F, F, F, F, F],
                                                     [F, F, T, T, F, F, F, F]])
    assert b["images"].shape == (2, 1, 2, 2, 3) and (b["images"][1] == 2).all()
    assert b["objects"].shape == (2, 2, 2, 2, 3)
    np.testing.assert_array_equal(b["num_objects"], [0, 2])
    with pytest.raises(ValueError, match="largest bucket 4"):
        pipeline.pad_batch([e2], buckets=(4,))


# --- sources: shards, shuffles, mixture -----------------------------------------------------------

def test_process_shards_are_disjoint_and_cover_the_source(tok, monkeypatch):
    records = [text_record(f"r{i}") for i in range(20)]
    shards = [tags(tok, stream(tok, records, seed=0, repeat=False, shard_index=i, shard_count=3))
              for i in range(3)]
    for i, shard in enumerate(shards):
        assert sorted(shard) == sorted(f"r{j}" for j in range(i, 20, 3))  # records i, i+3, ...
    # By default the shard is this JAX process's.
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    assert tags(tok, stream(tok, records, seed=0, repeat=False)) == shards[1]


def test_each_source_is_shuffled_with_its_own_seed_and_reshuffled_each_epoch(tok):
    records = [text_record(f"r{i}") for i in range(12)]

    def first(name, seed, n=12):
        it = iter(stream(tok, records, name=name, seed=seed, shard_index=0, shard_count=1))
        return [tag_of(tok, next(it)["input_ids"]) for _ in range(n)]

    a = first("a/train", 0, 24)
    epoch1, epoch2 = a[:12], a[12:]
    assert sorted(epoch1) == sorted(epoch2) == sorted(f"r{i}" for i in range(12))
    assert epoch1 != epoch2 and epoch1 != [f"r{i}" for i in range(12)]
    assert first("a/train", 0) == epoch1  # deterministic
    assert first("b/train", 0) != epoch1  # another source, another order
    assert first("a/train", 1) != epoch1  # another seed, another order


def test_mixture_follows_the_weights(tok):
    sources = {(name, "train"): [text_record(f"{name}{i}") for i in range(7)] for name in "abc"}
    weights = {"a": 5.0, "b": 3.0, "c": 2.0}
    it = pipeline.make_train_iterator(
        [(n, "train", w) for n, w in weights.items()], tokenizer=tok, spec=SPEC, batch_size=10,
        seed=0, buckets=BUCKETS, sources=sources, read_options=READ, shard_index=0, shard_count=1)
    counts = Counter()
    for _ in range(60):
        batch = next(it)
        counts.update(tag_of(tok, ids)[0] for ids in batch["input_ids"])
    total = sum(counts.values())
    assert total == 600
    for name, w in weights.items():
        assert abs(counts[name] / total - w / 10) < 0.02, counts


# --- batches ------------------------------------------------------------------------------------

def test_train_batches_hold_encoded_records(tok):
    records = shape_records()
    expected = [pipeline.encode_example(r, tok, SPEC) for r in records]
    it = train_iter(tok, records, shard_index=0, shard_count=1)
    seen = []
    for _ in range(4):
        b = next(it)
        assert b["input_ids"].shape[0] == 4 and b["input_ids"].shape[1] in BUCKETS
        assert b["images"].shape == (4, 1, 28, 28, 3)
        assert b["objects"].shape == (4, SPEC.max_objects, 28, 28, 3)
        for i in range(4):
            n = int(b["segment_ids"][i].sum())
            match = [j for j, e in enumerate(expected)
                     if np.array_equal(e["input_ids"], b["input_ids"][i, :n])
                     and np.array_equal(e["images"], b["images"][i])]
            assert len(match) == 1
            e = expected[match[0]]
            assert (b["input_ids"][i, n:] == tok.endoftext_id).all()
            np.testing.assert_array_equal(b["targets"][i, :n - 1], e["input_ids"][1:])
            np.testing.assert_array_equal(b["target_mask"][i, :n - 1], e["loss_mask"][1:])
            assert not b["target_mask"][i, n - 1:].any()
            k = int(e["num_objects"])
            np.testing.assert_array_equal(b["objects"][i, :k], e["objects"][:k])
            seen.append(match[0])
    # 16 examples from 12 records: one full epoch (a permutation) then the next one begins
    assert sorted(seen[:12]) == list(range(12))


def resumes_exactly(make, k=2, n=3):
    """Batches after get_state at batch k, from a fresh iterator given that state, equal the
    uninterrupted ones (the state goes through JSON, as grain.checkpoint writes it)."""
    it = make()
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(n)]
    resumed = make()
    resumed.set_state(state)
    got = [next(resumed) for _ in range(n)]
    for it_ in (it, resumed):
        getattr(it_, "close", lambda: None)()
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_state_restores_exactly_in_process(tok):
    records = shape_records()
    resumes_exactly(lambda: train_iter(tok, records, shard_index=0, shard_count=1), k=4)


def test_state_restores_exactly_with_worker_processes(tok):
    records = shape_records()
    resumes_exactly(lambda: train_iter(tok, records, shard_index=0, shard_count=1, worker_count=2,
                                       prefetch=1))


# --- bad records ----------------------------------------------------------------------------------

def bad_records():
    """(record, expected reason) for each kind of bad input found at read time."""
    good = next(r for r in shape_records() if len(r["objects"]) == 1 and len(r["conversations"]) == 2)
    png = good["image"]
    long_question = "Tell me " + "very " * 400 + "much."
    return [
        (dict(good, id="bad-corrupt", image=b"\x89PNG\r\n\x1a\n this is not a png"), "BadImageError"),
        (dict(good, id="bad-truncated", image=png[: len(png) // 2]), "BadImageError"),
        (dict(good, id="bad-empty", image=b""), "BadImageError"),
        (dict(good, id="bad-turns", conversations=[{"from": "gpt", "value": "hi"}]), "TemplateError"),
        (dict(good, id="bad-mismatch", objects=np.concatenate([good["objects"]] * 2)), "TemplateError"),
        (dict(text_record("x0"), id="bad-long",
              conversations=[{"from": "human", "value": long_question},
                             {"from": "gpt", "value": "ok"}]), "TemplateError"),
        ({k: v for k, v in text_record("x1").items() if k != "conversations"} | {"id": "bad-missing"},
         "KeyError"),
    ]


def test_bad_records_are_skipped_counted_and_logged(tok, caplog):
    bad = bad_records()
    records = []
    for i, (record, _) in enumerate(bad):
        records += [text_record(f"g{i}"), record]
    before = Counter(pipeline.SKIPPED)
    with caplog.at_level(logging.WARNING):
        got = tags(tok, stream(tok, records, name="mixed/train", seed=0, shuffle=False, repeat=False,
                               shard_index=0, shard_count=1))
    assert got == [f"g{i}" for i in range(len(bad))]  # the stream goes on, in order
    assert pipeline.SKIPPED - before == Counter(reason for _, reason in bad)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for record, reason in bad:
        assert any(record["id"] in m and "mixed/train" in m and reason in m for m in messages), \
            record["id"]


def test_a_source_of_only_bad_records_raises_instead_of_hanging(tok):
    broken = [r for r, _ in bad_records()[:3]]
    with pytest.raises(pipeline.BadSourceError, match="broken/train: the last 10 records"):
        next(iter(stream(tok, broken, name="broken/train", seed=0, shard_index=0, shard_count=1,
                         max_consecutive_skips=10)))
    sources = {("good", "train"): [text_record("g0")], ("broken", "train"): broken}
    it = pipeline.make_train_iterator(
        [("good", "train", 1.0), ("broken", "train", 1.0)], tokenizer=tok, spec=SPEC, batch_size=2,
        seed=0, buckets=BUCKETS, sources=sources, read_options=READ, shard_index=0, shard_count=1,
        max_consecutive_skips=10)
    with pytest.raises(pipeline.BadSourceError, match="broken/train"):
        next(it)


# --- eval batches ---------------------------------------------------------------------------------

@pytest.mark.parametrize("limit, batches", [(0, 2), (5, 1)])
def test_eval_batches_line_up_across_hosts_and_count_each_record_once(tok, limit, batches):
    records = [text_record(f"e{i}") for i in range(10)]
    counted = []
    for host in range(3):
        out = list(pipeline.make_eval_batches("ev", "test", tokenizer=tok, spec=SPEC, batch_size=2,
                                              buckets=BUCKETS, source=records, limit=limit,
                                              shard_index=host, shard_count=3, read_options=READ))
        assert len(out) == batches  # the same on every host
        for b in out:
            for i in range(2):
                if b["target_mask"][i].any():
                    counted.append(tag_of(tok, b["input_ids"][i]))
                else:  # filler: a single padding token
                    assert b["segment_ids"][i].sum() == 1
    n = limit or 10
    assert sorted(counted) == sorted(f"e{i}" for i in range(n))


# --- device arrays ------------------------------------------------------------------------------

def test_to_global_shards_the_batch_over_data_and_fsdp(tok):
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    records = [text_record(f"d{i}") for i in range(8)]
    it = pipeline.make_train_iterator([("d", "train", 1.0)], tokenizer=tok, spec=SPEC, batch_size=8,
                                      seed=0, buckets=BUCKETS, sources={("d", "train"): records},
                                      read_options=READ, shard_index=0, shard_count=1)
    batch = next(it)
    arrays = pipeline.to_global(batch, mesh)
    assert arrays.keys() == batch.keys()
    for key, array in arrays.items():
        assert array.shape == batch[key].shape and array.dtype == batch[key].dtype
        np.testing.assert_array_equal(np.asarray(array), batch[key])
        for d in range(2):
            for f in range(2):
                rows = slice((2 * d + f) * 2, (2 * d + f + 1) * 2)  # batch split data-major
                for t in range(2):
                    shard = next(s for s in array.addressable_shards
                                 if s.device == mesh.devices[d, f, t])
                    np.testing.assert_array_equal(np.asarray(shard.data), batch[key][rows])


def test_hosts_agree_on_sequence_length(monkeypatch):
    from jax.experimental import multihost_utils

    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.array([96, 160]))
    batch = pipeline.pad_batch([{"input_ids": np.array([5, 6, 7]), "loss_mask": np.array([0, 1, 1], bool),
                                 "images": np.zeros((1, 2, 2, 3), np.uint8),
                                 "objects": np.zeros((1, 2, 2, 3), np.uint8),
                                 "num_images": np.int32(0), "num_objects": np.int32(0)}],
                               buckets=(96, 160), pad_id=0)
    out = pipeline._agree_on_length(batch)
    for key in ("input_ids", "positions", "segment_ids", "targets", "target_mask"):
        assert out[key].shape == (1, 160)
        np.testing.assert_array_equal(out[key][:, :96], batch[key])
        assert not out[key][:, 96:].any()
    assert out["images"] is batch["images"]
