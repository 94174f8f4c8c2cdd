"""What a DataLoader serves from a ClipIndex.

- `BucketBatchSampler` yields batches of index positions that never mix buckets, reshuffled per
  epoch from the seed, sharded across DDP ranks, and able to start mid-epoch (exact resume).
- `ClipBatches` turns one batch of positions into tensors: it opens the pinned dataset version
  lazily in each process (Lance is not fork-safe, so loader workers use the spawn context) and
  either decodes the MP4 blobs (media.read_clip: only the frames a bucket takes) or reads the encode
  stage's latent/text columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from media import MediaError, read_clip
from store import ClipReader
from train.clip_index import LATENT_INPUTS, ClipIndex, bucket_name
from train.config import Bucket
from train.prompts import render_prompts, template_columns


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of positions into a ClipIndex: one bucket per batch, shuffled per epoch, sharded per rank.

    The order is a pure function of (seed, epoch) and the index, so a resumed run sees the batches an
    uninterrupted one would. Work is numpy per bucket and per batch, never per clip in Python."""

    def __init__(
        self,
        index: ClipIndex,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        self.index, self.batch_size, self.seed = index, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Start epoch `epoch` at batch `start_batch` (a resumed run skips what it has done)."""
        self.epoch, self.start_batch = epoch, start_batch

    def _groups(self) -> list[np.ndarray]:
        """Positions per bucket, buckets in name order (equal buckets listed twice share one group)."""
        by_name: dict[str, list[int]] = {}
        for code, bucket in enumerate(self.index.bucket_list):
            by_name.setdefault(bucket_name(bucket), []).append(code)
        groups = [np.flatnonzero(np.isin(self.index.bucket_codes, by_name[name])) for name in sorted(by_name)]
        return [g for g in groups if len(g)]

    def _batch_sizes(self, members: int) -> np.ndarray:
        # Every rank sees whole batches of batch_size; a short tail batch is dropped when training
        # so DDP ranks stay in lockstep and every step has the same shape.
        full, tail = divmod(members, self.batch_size)
        sizes = np.full(full, self.batch_size, np.int64)
        return sizes if (self.shuffle and full) or not tail else np.append(sizes, tail)

    def _all_batches(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions of every kept clip, bucket after bucket; start and length of each of this rank's
        batches in it, in the order they are served)."""
        rng = np.random.default_rng([self.seed % 2**64, self.epoch])
        flat, starts, lengths, at = [], [], [], 0
        for members in self._groups():
            if self.shuffle:
                members = rng.permutation(members)
            sizes = self._batch_sizes(len(members))
            kept = int(sizes.sum())
            flat.append(members[:kept])
            starts.append(at + np.arange(len(sizes), dtype=np.int64) * self.batch_size)
            lengths.append(sizes)
            at += kept
        if not flat:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        start, length = np.concatenate(starts), np.concatenate(lengths)
        order = rng.permutation(len(start)) if self.shuffle else np.arange(len(start))
        usable = len(order) // self.world_size * self.world_size
        mine = order[self.rank : usable : self.world_size]
        return np.concatenate(flat), start[mine], length[mine]

    def __len__(self) -> int:
        total = sum(len(self._batch_sizes(len(members))) for members in self._groups())
        return total // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        flat, start, length = self._all_batches()
        for s, n in zip(start[self.start_batch :].tolist(), length[self.start_batch :].tolist(), strict=True):
            yield flat[s : s + n].tolist()


def decode_clip(data: bytes, bucket: Bucket) -> np.ndarray:
    """MP4 bytes -> (frames, H, W, 3) uint8: the middle `bucket.frames` frames, resized to cover the
    bucket and centre-cropped. Raises ValueError naming the problem when the clip cannot fill it.

    Only those frames are converted, and decoding stops after the last of them."""
    try:
        return read_clip(data, middle=bucket.frames, cover=(bucket.width, bucket.height)).frames
    except MediaError as err:
        raise ValueError(
            f"bucket {bucket_name(bucket)} needs {bucket.frames} frames, the clip bytes do not decode to them: {err}"
        ) from err


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


class ClipBatches(Dataset[dict[str, Any]]):
    """Maps a batch (list of index positions) to tensors; used with DataLoader(batch_size=None).

    Reads the batch's clip ids, captions and blobs (or latents) by row id at the index's version:
    O(batch), whatever the size of the table."""

    def __init__(self, index: ClipIndex, caption_column: str = "caption"):
        self.index = index
        self.caption_column = caption_column
        self._ds: lance.LanceDataset | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _dataset(self) -> lance.LanceDataset:
        if self._ds is None:  # opened in the process that reads (each spawned worker has its own)
            self._ds = lance.dataset(self.index.uri, version=self.index.version)
        return self._ds

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}

    def __getitem__(self, positions: list[int]) -> dict[str, Any]:
        ds = self._dataset()
        row_ids = self.index.row_ids[np.asarray(positions, np.int64)].tolist()
        bucket = self.index.bucket(positions[0])
        template = self.index.prompt_template or f"{{{self.caption_column}}}"
        wanted = [c for c in template_columns(template) if c in ds.schema.names]
        columns = ["clip_id", *wanted]
        if self.index.has_latents:
            columns += list(LATENT_INPUTS)
        reader = ClipReader(ds)
        table = reader.columns(row_ids, columns)
        ids = table["clip_id"].to_pylist()
        values = {
            c: table[c].to_pylist() if c in wanted else [None] * len(ids) for c in template_columns(template)
        }
        captions = render_prompts(values, template, len(ids))
        if self.index.has_latents:
            return {"clip_id": ids, "caption": captions, **latent_tensors(table)}
        videos = []
        for data, clip_id in zip(reader.blobs(row_ids, "video"), ids, strict=True):
            try:
                videos.append(frames_to_tensor(decode_clip(data, bucket)))
            except ValueError as err:
                raise ValueError(f"clip {clip_id}: {err}") from err
        return {"clip_id": ids, "caption": captions, "video": torch.stack(videos)}


def latent_tensors(table: pa.Table) -> dict[str, torch.Tensor]:
    """Tensors from rows holding the encode stage's latent/text columns."""
    columns = table.select(list(LATENT_INPUTS)).to_pydict()
    latents = [
        np.frombuffer(b, np.float32).reshape(s)
        for b, s in zip(columns["latent"], columns["latent_shape"], strict=True)
    ]
    texts = [
        np.frombuffer(b, np.float32).reshape(s)
        for b, s in zip(columns["text_emb"], columns["text_shape"], strict=True)
    ]
    text = torch.from_numpy(np.stack(texts))
    lengths = torch.tensor(columns["text_len"], dtype=torch.int64)
    return {
        "latent": torch.from_numpy(np.stack(latents)),
        "text": text,
        "text_mask": torch.arange(text.shape[1])[None, :] < lengths[:, None],
    }


def make_loader(
    batches: ClipBatches, sampler: BucketBatchSampler, num_workers: int, pin_memory: bool = False
) -> DataLoader[dict[str, Any]]:
    """A DataLoader over whole batches; workers are spawned (Lance is not fork-safe) and persistent.
    `pin_memory` (training on CUDA) puts batches in page-locked memory so their copies to the GPU do
    not block."""
    return DataLoader(
        batches,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context="spawn" if num_workers else None,
        persistent_workers=bool(num_workers),
        collate_fn=None,
        pin_memory=pin_memory,
    )
