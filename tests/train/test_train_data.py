"""Training data: buckets, batches that never mix them, resume mid-epoch, rank shards, spawn workers, filters."""

from __future__ import annotations

import pytest
import torch

from train.config import Bucket, DataConfig
from train.data import (
    BucketBatchSampler,
    ClipBatches,
    assign_bucket,
    build_index,
    decode_clip,
    make_loader,
)

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
    index.buckets = [SQUARE if i % 3 else LONG_WIDE for i in range(len(index))]  # force two populated buckets
    sampler = BucketBatchSampler(index, batch_size=2, seed=7)
    sampler.set_epoch(3)
    batches = list(sampler)
    assert all(len({index.buckets[i] for i in b}) == 1 for b in batches)
    assert all(len(b) == 2 for b in batches)
    sampler.set_epoch(3, start_batch=2)
    assert list(sampler) == batches[2:]
    sampler.set_epoch(4)
    assert list(sampler) != batches  # reshuffled per epoch

    shards = []
    for rank in range(2):
        ranked = BucketBatchSampler(index, batch_size=2, seed=7, rank=rank, world_size=2)
        ranked.set_epoch(3)
        shards.append(list(ranked))
    assert len(shards[0]) == len(shards[1])
    seen = [i for shard in shards for b in shard for i in b]
    assert len(seen) == len(set(seen))  # ranks never share a clip


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
    with pytest.raises(ValueError, match="not a valid filter"):
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
