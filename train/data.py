"""Training data from the `clips` Lance table: filter, bucket, batch, decode or read precomputed latents.

- The index (`ClipIndex`) reads only small columns once, applies the config's SQL filter, assigns
  every clip to the resolution x length bucket that fits it best, and splits train/validation
  by a hash of clip_id (stable across runs and machines).
- `BucketBatchSampler` yields batches of row offsets that never mix buckets, reshuffled per epoch
  from the seed, sharded across DDP ranks, and able to start mid-epoch (exact resume).
- `ClipBatches` turns one batch of offsets into tensors: it opens the pinned dataset version
  lazily in each process (Lance is not fork-safe, so loader workers use the spawn context) and
  either decodes the MP4 blobs with PyAV or reads the encode stage's latent/text columns.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import av
import cv2
import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import DataLoader, Dataset, Sampler

from train.config import Bucket, DataConfig

log = logging.getLogger(__name__)

# Columns the encode stage adds (raw little-endian float32, shapes alongside).
LATENT_COLUMNS = ("latent", "latent_shape", "text_emb", "text_shape", "text_len", "latent_bucket")


def bucket_name(bucket: Bucket) -> str:
    return f"{bucket.height}x{bucket.width}x{bucket.frames}"


def assign_bucket(width: int, height: int, num_frames: int, buckets: Sequence[Bucket]) -> Bucket | None:
    """The bucket with the closest aspect ratio among those the clip is long enough for, preferring
    longer ones; None when the clip is shorter than every bucket."""
    fitting = [b for b in buckets if b.frames <= num_frames]
    if not fitting or width <= 0 or height <= 0:
        return None
    aspect = np.log(width / height)
    return min(fitting, key=lambda b: (round(abs(aspect - np.log(b.width / b.height)), 3), -b.frames))


def is_validation(clip_id: str, fraction: float) -> bool:
    digest = hashlib.sha1(clip_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class ClipIndex:
    """Which rows train, in which bucket. `offsets` are row positions in the pinned dataset version."""

    uri: str
    version: int
    offsets: list[int]
    clip_ids: list[str]
    buckets: list[Bucket]
    captions: list[str]
    has_latents: bool
    skipped: dict[str, int] = field(default_factory=dict)

    def subset(self, keep: Sequence[int]) -> ClipIndex:
        return ClipIndex(
            self.uri,
            self.version,
            [self.offsets[i] for i in keep],
            [self.clip_ids[i] for i in keep],
            [self.buckets[i] for i in keep],
            [self.captions[i] for i in keep],
            self.has_latents,
            dict(self.skipped),
        )

    def split(self, val_fraction: float) -> tuple[ClipIndex, ClipIndex]:
        val = [i for i, c in enumerate(self.clip_ids) if is_validation(c, val_fraction)]
        val_set = set(val)
        train = [i for i in range(len(self.clip_ids)) if i not in val_set]
        return self.subset(train), self.subset(val)

    def __len__(self) -> int:
        return len(self.offsets)


def build_index(uri: str, config: DataConfig, require_captions: bool = True) -> ClipIndex:
    """Select, bucket and index the clips to train on; `require_captions=False` for the autoencoder,
    which learns from pixels alone."""
    ds = lance.dataset(uri)
    names = set(ds.schema.names)
    if require_captions and config.caption_column not in names:
        raise ValueError(
            f"clips at {uri} have no '{config.caption_column}' column: run `reelforge caption` first "
            "or set train.data.caption_column"
        )
    has_latents = all(c in names for c in LATENT_COLUMNS)
    if config.latents == "precomputed" and not has_latents:
        raise ValueError(
            f"train.data.latents=precomputed but clips at {uri} have no latent columns: run `reelforge encode`"
        )
    small = ["clip_id", "width", "height", "num_frames"]
    if config.caption_column in names:
        small += [config.caption_column]
    if has_latents:
        small += ["latent_bucket"]
    everything = ds.to_table(columns=small)
    offsets = np.arange(everything.num_rows)
    if config.filter:
        try:
            selected = ds.to_table(columns=["clip_id"], filter=config.filter).column("clip_id")
        except Exception as err:  # Lance raises several types for bad SQL; name the expression.
            raise ValueError(
                f"train.data.filter {config.filter!r} is not a valid filter on clips: {err}"
            ) from err
        mask = pc.is_in(everything.column("clip_id"), value_set=selected).to_numpy(zero_copy_only=False)
        everything, offsets = everything.filter(pa.array(mask)), offsets[mask]
    rows = everything.to_pylist()
    index = ClipIndex(uri, ds.version, [], [], [], [], has_latents and config.latents != "decode")
    skipped: dict[str, int] = {}
    for offset, row in zip(offsets.tolist(), rows, strict=True):
        caption = row.get(config.caption_column) or ""
        bucket = assign_bucket(row["width"] or 0, row["height"] or 0, row["num_frames"] or 0, config.buckets)
        reason = None
        if require_captions and not str(caption).strip():
            reason = "no caption"
        elif bucket is None:
            reason = "shorter than every bucket"
        elif index.has_latents and row.get("latent_bucket") != bucket_name(bucket):
            reason = "not encoded for its bucket"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        index.offsets.append(offset)
        index.clip_ids.append(row["clip_id"])
        index.buckets.append(bucket)  # type: ignore[arg-type]
        index.captions.append(str(caption))
    if index.has_latents and skipped.get("not encoded for its bucket") and config.latents == "auto":
        # Some clips lack latents for the configured buckets: decoding everything is the honest fallback.
        log.warning("some clips are not encoded for the configured buckets; decoding clips on the fly")
        return build_index(uri, config.model_copy(update={"latents": "decode"}), require_captions)
    index.skipped = skipped
    if skipped:
        log.info("clips left out of training: %s", skipped)
    return index


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of positions into a ClipIndex: one bucket per batch, shuffled per epoch, sharded per rank."""

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
        self.epoch, self.start_batch = epoch, start_batch

    def _all_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        by_bucket: dict[str, list[int]] = {}
        for i, b in enumerate(self.index.buckets):
            by_bucket.setdefault(bucket_name(b), []).append(i)
        batches: list[list[int]] = []
        for name in sorted(by_bucket):
            members = by_bucket[name]
            if self.shuffle:
                rng.shuffle(members)
            # Every rank sees whole batches of batch_size; a short tail batch is dropped when training
            # so DDP ranks stay in lockstep and every step has the same shape.
            full = len(members) // self.batch_size * self.batch_size
            keep = members[:full] if (self.shuffle and full) else members
            batches += [keep[i : i + self.batch_size] for i in range(0, len(keep), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        usable = len(batches) // self.world_size * self.world_size
        return batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return len(self._all_batches())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.start_batch :]


def decode_clip(data: bytes, bucket: Bucket) -> np.ndarray:
    """MP4 bytes -> (frames, H, W, 3) uint8: the middle `bucket.frames` frames, resized to cover the
    bucket and centre-cropped. Raises ValueError naming the problem when the clip cannot fill it."""
    try:
        to_rgb = VideoReformatter()  # one single-threaded swscale context per clip, not one per frame
        with av.open(io.BytesIO(data), mode="r") as container:
            frames = [
                to_rgb.reformat(f, format="rgb24", threads=1).to_ndarray() for f in container.decode(video=0)
            ]
    except av.error.FFmpegError as err:
        raise ValueError(f"clip bytes do not decode: {err}") from err
    if len(frames) < bucket.frames:
        raise ValueError(
            f"clip decodes to {len(frames)} frames, bucket {bucket_name(bucket)} needs {bucket.frames}"
        )
    start = (len(frames) - bucket.frames) // 2
    out = np.empty((bucket.frames, bucket.height, bucket.width, 3), np.uint8)
    for i, frame in enumerate(frames[start : start + bucket.frames]):
        out[i] = resize_cover_crop(frame, bucket.height, bucket.width)
    return out


def resize_cover_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = cv2.resize(
        frame, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


class ClipBatches(Dataset):
    """Maps a batch (list of index positions) to tensors; used with DataLoader(batch_size=None)."""

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
        offsets = [self.index.offsets[p] for p in positions]
        bucket = self.index.buckets[positions[0]]
        captions = [self.index.captions[p] for p in positions]
        ids = [self.index.clip_ids[p] for p in positions]
        if self.index.has_latents:
            return {"clip_id": ids, "caption": captions, **read_latents(self._dataset(), offsets)}
        # read_blobs types every blob as optional; split writes the bytes of every clip it adds
        blobs = cast(
            list[tuple[int, bytes]], self._dataset().read_blobs("video", indices=offsets, preserve_order=True)
        )
        videos = []
        for (_, data), clip_id in zip(blobs, ids, strict=True):
            try:
                videos.append(frames_to_tensor(decode_clip(data, bucket)))
            except ValueError as err:
                raise ValueError(f"clip {clip_id}: {err}") from err
        return {"clip_id": ids, "caption": captions, "video": torch.stack(videos)}


def read_latents(ds: lance.LanceDataset, offsets: Sequence[int]) -> dict[str, torch.Tensor]:
    """The encode stage's columns for these rows: latent (B, C, T, H, W), text (B, L, E), text_mask (B, L)."""
    table = ds.take(list(offsets), columns=["latent", "latent_shape", "text_emb", "text_shape", "text_len"])
    columns = table.to_pydict()
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


def make_loader(batches: ClipBatches, sampler: BucketBatchSampler, num_workers: int) -> DataLoader:
    """A DataLoader over whole batches; workers are spawned (Lance is not fork-safe) and persistent."""
    return DataLoader(
        batches,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context="spawn" if num_workers else None,
        persistent_workers=bool(num_workers),
        collate_fn=None,
    )
