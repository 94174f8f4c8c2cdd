"""Training data: buckets, batches that never mix them, resume mid-epoch, rank shards, spawn workers, filters."""

from __future__ import annotations

import hashlib

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from synthetic_store import make_store

from train.clip_index import assign_bucket, assign_buckets, build_index, is_validation, split_keys
from train.config import Bucket, DataConfig
from train.loader import BucketBatchSampler, ClipBatches, decode_clip, make_loader

SQUARE, WIDE, LONG_WIDE = (
    Bucket(height=32, width=32, frames=9),
    Bucket(height=32, width=48, frames=9),
    Bucket(height=32, width=48, frames=17),
)


def test_bucket_assignment_prefers_aspect_then_length():
    buckets = (SQUARE, WIDE, LONG_WIDE)
    assert assign_bucket(96, 54, 17, buckets) == LONG_WIDE
    assert assign_bucket(96, 54, 12, buckets) == WIDE  # too short for 17 frames
    assert assign_bucket(64, 64, 30, buckets) == SQUARE
    assert assign_bucket(64, 64, 5, buckets) is None


def test_batches_never_mix_buckets_and_resume_mid_epoch(real_clips):
    store, _ = real_clips
    index = build_index(store.clips_uri, DataConfig(buckets=(SQUARE, LONG_WIDE)))
    # force two populated buckets: codes index index.bucket_list
    index.bucket_codes = np.array([0 if i % 3 else 1 for i in range(len(index))], np.int16)
    sampler = BucketBatchSampler(index, batch_size=2, seed=7)
    sampler.set_epoch(3)
    batches = list(sampler)
    assert all(len({index.bucket(i) for i in b}) == 1 for b in batches)
    assert all(len(b) == 2 for b in batches)
    sampler.set_epoch(3, start_batch=2)
    assert list(sampler) == batches[2:]
    sampler.set_epoch(4)
    assert list(sampler) != batches  # reshuffled per epoch
    sampler.set_epoch(3)
    assert list(sampler) == batches and len(sampler) == len(batches)  # a pure function of (seed, epoch)

    shards = []
    for rank in range(2):
        ranked = BucketBatchSampler(index, batch_size=2, seed=7, rank=rank, world_size=2)
        ranked.set_epoch(3)
        shards.append(list(ranked))
    assert len(shards[0]) == len(shards[1]) == len(batches) // 2
    seen = [i for shard in shards for b in shard for i in b]
    assert len(seen) == len(set(seen))  # ranks never share a clip
    # each rank its own share of the same epoch: together the epoch's batches (an odd one out dropped)
    epoch = {tuple(b) for b in batches}
    assert {tuple(b) for shard in shards for b in shard} <= epoch
    assert len(epoch) - 2 * len(shards[0]) == len(batches) % 2
    assert all(len({index.bucket(i) for i in b}) == 1 for shard in shards for b in shard)
    ranked = BucketBatchSampler(index, batch_size=2, seed=7, rank=1, world_size=2)
    ranked.set_epoch(3, start_batch=1)
    assert list(ranked) == shards[1][1:]  # a rank resumes its own share mid-epoch


@pytest.mark.slow
def test_spawned_loader_workers_give_the_same_batches(real_clips):
    store, _ = real_clips
    index = build_index(store.clips_uri, DataConfig(buckets=(SQUARE,)))
    sampler = BucketBatchSampler(index, batch_size=4, seed=0)
    batches = ClipBatches(index)
    in_process = [b["video"] for b in make_loader(batches, sampler, num_workers=0)]
    spawned = [b["video"] for b in make_loader(batches, sampler, num_workers=2)]
    assert len(in_process) == len(spawned) > 0
    assert all(torch.equal(a, b) for a, b in zip(in_process, spawned, strict=True))
    assert in_process[0].shape == (4, 3, 9, 32, 32)
    assert in_process[0].min() >= -1.0 and in_process[0].max() <= 1.0


def test_filter_expression_selects_clips_and_bad_filters_are_named(real_clips):
    store, specs = real_clips
    first_caption = specs[0].caption
    index = build_index(store.clips_uri, DataConfig(buckets=(SQUARE,), filter=f"caption = '{first_caption}'"))
    assert len(index) == sum(s.caption == first_caption for s in specs) > 0
    with pytest.raises(
        ValueError, match=r"^train\.data\.filter names unknown column .no_such_column.; columns: caption, "
    ):
        build_index(store.clips_uri, DataConfig(buckets=(SQUARE,), filter="no_such_column > 3"))
    with pytest.raises(ValueError, match="no 'title' column"):
        build_index(store.clips_uri, DataConfig(buckets=(SQUARE,), caption_column="title"))


def test_clips_shorter_than_every_bucket_are_counted_not_trained(real_clips):
    store, specs = real_clips
    index = build_index(store.clips_uri, DataConfig(buckets=(Bucket(height=32, width=32, frames=33),)))
    assert len(index) == 0 and index.skipped == {"shorter than every bucket": len(specs)}


def test_decode_errors_are_specific(real_clips):
    with pytest.raises(ValueError, match="do not decode"):
        decode_clip(b"not a video at all", SQUARE)
    store, _ = real_clips
    clip_id = store.read_clips(columns=["clip_id"]).column("clip_id")[0].as_py()
    data = store.read_clip_bytes([clip_id])[clip_id]
    with pytest.raises(ValueError, match="needs 33"):
        decode_clip(data, Bucket(height=32, width=32, frames=33))


def test_vectorised_split_keys_are_the_sha1_split_of_is_validation():
    ids = ["", "a", "x" * 55, "x" * 56, "y" * 64, "z" * 130, "clip é ü 字", "0123456789abcdef_0000012000000"]
    ids += [f"{i:016x}_{i * 37:013d}" for i in range(3000)]
    keys = split_keys(pa.array(ids))
    assert keys.tolist() == [int.from_bytes(hashlib.sha1(c.encode()).digest()[:8], "big") for c in ids]
    assert split_keys(pa.chunked_array([ids[:5], ids[5:]])).tolist() == keys.tolist()
    for fraction in (0.0, 0.1, 0.5, 0.97):
        expected = [is_validation(c, fraction) for c in ids]
        assert (keys.astype(np.float64) / 2.0**64 < fraction).tolist() == expected


def test_vectorised_bucket_assignment_is_assign_bucket():
    buckets = (SQUARE, WIDE, LONG_WIDE, Bucket(height=48, width=32, frames=5), SQUARE)
    rng = np.random.default_rng(0)
    width, height = rng.integers(-2, 300, 5000), rng.integers(-2, 300, 5000)
    frames = rng.integers(0, 30, 5000)
    codes = assign_buckets(width, height, frames, buckets)
    for w, h, f, code in zip(width.tolist(), height.tolist(), frames.tolist(), codes.tolist(), strict=True):
        expected = assign_bucket(w, h, f, buckets)
        assert (None if code < 0 else buckets[code]) == expected


def _row_by_row_index(uri: str, config: DataConfig) -> tuple[list[str], list[Bucket], list[str]]:
    """The selection the index made before it streamed: whole columns, one Python step per clip."""
    ds = lance.dataset(uri)
    rows = ds.to_table(columns=["clip_id", "width", "height", "num_frames", "caption"])
    if config.filter:
        chosen = ds.to_table(columns=["clip_id"], filter=config.filter)["clip_id"]
        rows = rows.filter(pc.is_in(rows["clip_id"], value_set=chosen))
    ids, buckets = [], []
    for row in rows.to_pylist():
        bucket = assign_bucket(row["width"] or 0, row["height"] or 0, row["num_frames"] or 0, config.buckets)
        if str(row["caption"] or "").strip() and bucket is not None:
            ids.append(row["clip_id"])
            buckets.append(bucket)
    return ids, buckets, [c for c in ids if is_validation(c, 0.25)]


def test_streamed_index_selects_what_the_row_by_row_index_did(tmp_path, monkeypatch):
    store = make_store(tmp_path / "store", 2_000, clips_per_fragment=50, embed_dim=8)
    config = DataConfig(
        buckets=(SQUARE, WIDE, LONG_WIDE, Bucket(height=48, width=32, frames=9)),
        filter="technical_quality > 0.2 AND motion < 0.02",
    )
    # several batches, one cut inside a fragment
    monkeypatch.setattr("train.clip_index.INDEX_BATCH_ROWS", 300)
    index = build_index(store.clips_uri, config)
    ids, buckets, validation = _row_by_row_index(store.clips_uri, config)
    assert (
        0 < len(index) < 2_000
        and index.skipped["no caption"] > 0
        and index.skipped["shorter than every bucket"] > 0
    )
    assert index.row_ids.dtype == np.uint64 and index.read(["clip_id"])["clip_id"].to_pylist() == ids
    assert [index.bucket(i) for i in range(len(index))] == buckets
    assert len(set(buckets)) >= 3
    _, val = index.split(0.25)
    assert val.read(["clip_id"])["clip_id"].to_pylist() == validation
