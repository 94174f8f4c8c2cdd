"""Training data from the `clips` Lance table: filter, bucket, batch, decode or read precomputed latents.

- The index (`ClipIndex`) streams the small columns once at one dataset version, with the config's
  SQL filter pushed into the scan, assigns every clip to the resolution x length bucket that fits it
  best, and keeps only numpy arrays (~19 bytes a clip): the clips' stable row ids, their bucket codes
  and the hash that splits train/validation by clip_id (stable across runs and machines). Captions,
  blobs and latents stay in Lance and are read per batch by row id.
- `BucketBatchSampler` yields batches of index positions that never mix buckets, reshuffled per
  epoch from the seed, sharded across DDP ranks, and able to start mid-epoch (exact resume).
- `ClipBatches` turns one batch of positions into tensors: it opens the pinned dataset version
  lazily in each process (Lance is not fork-safe, so loader workers use the spawn context) and
  either decodes the MP4 blobs (media.read_clip: only the frames a bucket takes) or reads the encode stage's latent/text columns.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from media import MediaError, read_clip
from store import ROW_ID, ClipReader
from store.filters import FilterError, check_on, parse_filter
from train.config import Bucket, DataConfig

log = logging.getLogger(__name__)

# Columns the encode stage adds (raw little-endian float32, shapes alongside).
LATENT_COLUMNS = ("latent", "latent_shape", "text_emb", "text_shape", "text_len", "latent_bucket")
LATENT_INPUTS = LATENT_COLUMNS[:5]  # what a training batch reads of them
# Rows per streamed batch of the index scan: a few MB of small columns at a time.
INDEX_BATCH_ROWS = 65_536
# Lance's file-metadata cache for the index's one streamed pass. By default it keeps every fragment's
# metadata: ~40 KB a fragment, +390 MB RSS over 10^4 fragments (pylance 14.0.2); 16 MB was as fast.
SCAN_METADATA_CACHE_BYTES = 16 << 20
NO_BUCKET = -1  # bucket code of a clip shorter than every bucket


class TrainDataError(ValueError):
    """The clips cannot serve this training config (none fit, too few for the workers, latents from
    another encoder): a user's setting or an earlier stage fixes it, and the message names which."""


# What brings back clips left out for each reason (build_index's `skipped` keys), per config section
# that trains: the DiT's buckets (train.data) or the autoencoder's one clip shape (train.vae_train).
_FIXES = {
    "train.data": {
        "no caption": "run `reelforge caption`",
        "shorter than every bucket": "add a bucket of fewer frames to train.data.buckets",
        "not encoded for its bucket": "run `reelforge encode`",
        "validation": "lower train.val_fraction",
    },
    "train.vae_train": {
        "shorter than every bucket": "lower train.vae_train.frames",
        "validation": "lower train.vae_train.val_fraction",
    },
}


def no_clips_error(what: str, index: ClipIndex, settings: str) -> TrainDataError:
    """The one-line refusal when `index` (before the validation split) leaves nothing to train on: how
    many clips the filter chose, why each was left out, and the setting or command that brings them
    back. `settings` is the config section (train.data, train.vae_train) the fixes name."""
    chosen = len(index) + sum(index.skipped.values())
    if chosen == 0:
        return TrainDataError(
            f"no clip in {index.uri} matches {settings}.filter, so there is nothing to {what}: "
            f"run `reelforge filter` or change {settings}.filter"
        )
    reasons = [f"{count} {reason}" for reason, count in index.skipped.items()]
    fixes = [_FIXES[settings][reason] for reason in index.skipped]
    if len(index):  # every clip that fits was held out for validation
        reasons.append(f"{len(index)} held out for validation")
        fixes.append(_FIXES[settings]["validation"])
    return TrainDataError(
        f"none of the {chosen} clips {settings}.filter chooses in {index.uri} is left to {what} "
        f"({', '.join(reasons)}): {' or '.join(fixes)}"
    )


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


def assign_buckets(
    width: np.ndarray, height: np.ndarray, num_frames: np.ndarray, buckets: Sequence[Bucket]
) -> np.ndarray:
    """`assign_bucket` over arrays: each clip's position in `buckets` (int16), NO_BUCKET for none.

    The answer depends on the clip only through (width, height) and how many bucket lengths it
    reaches, so `assign_bucket` itself runs once per distinct such triple (a handful per batch in
    practice: clips come in a few sizes), which keeps its exact semantics."""
    lengths = np.sort(np.unique([b.frames for b in buckets]))
    reach = np.searchsorted(lengths, num_frames, side="right")
    keys = np.stack([width.astype(np.int64), height.astype(np.int64), reach.astype(np.int64)], axis=1)
    distinct, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    codes = np.full(len(distinct), NO_BUCKET, np.int16)
    for k, row in enumerate(first.tolist()):
        found = assign_bucket(int(width[row]), int(height[row]), int(num_frames[row]), buckets)
        if found is not None:
            codes[k] = next(i for i, b in enumerate(buckets) if b is found)
    return codes[inverse.reshape(-1)]


def is_validation(clip_id: str, fraction: float) -> bool:
    digest = hashlib.sha1(clip_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_keys(clip_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The first 8 bytes (big-endian uint64) of SHA-1 of each clip_id's UTF-8 bytes, vectorised over the
    rows: `is_validation(c, f)` is `split_keys([c])[0] / 2**64 < f`, so the split is the one
    `is_validation` has always made, without a Python loop per clip."""
    if isinstance(clip_ids, pa.ChunkedArray):
        clip_ids = clip_ids.combine_chunks()
    strings = clip_ids.cast(pa.large_string())
    n = len(strings)
    out = np.zeros(n, np.uint64)
    if n == 0:
        return out
    _, offset_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offset_buffer, np.int64, n + 1, strings.offset * 8)
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    lengths = np.diff(offsets)
    blocks = (lengths + 8) // 64 + 1  # message, the 0x80 byte and the 8-byte bit length, in 64-byte blocks
    for count in np.unique(blocks).tolist():  # almost always one group: clip ids are < 56 bytes
        rows = np.flatnonzero(blocks == count)
        out[rows] = _sha1_prefix(data, offsets[rows], lengths[rows], count)
    return out


def _sha1_prefix(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, blocks: int) -> np.ndarray:
    """SHA-1 (FIPS 180-4) of messages that all pad to `blocks` blocks, one numpy lane per message."""
    n, width = len(starts), blocks * 64
    message = np.zeros((n, width), np.uint8)
    for j in range(int(lengths.max()) if n else 0):  # column by column: n x width bytes, no larger temporary
        inside = j < lengths
        message[inside, j] = data[starts[inside] + j]
    rows = np.arange(n)
    message[rows, lengths] = 0x80
    bits = lengths.astype(np.uint64) * np.uint64(8)
    message[:, -8:] = bits.astype(">u8").view(np.uint8).reshape(n, 8)
    words = message.view(">u4").astype(np.uint32).reshape(n, blocks, 16)

    def rotl(x: np.ndarray, s: int) -> np.ndarray:
        return (x << np.uint32(s)) | (x >> np.uint32(32 - s))

    h = [np.full(n, v, np.uint32) for v in (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)]
    for block in range(blocks):
        w = [words[:, block, i] for i in range(16)]
        for i in range(16, 80):
            w.append(rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1))
        a, b, c, d, e = h
        for i in range(80):
            if i < 20:
                f, k = (b & c) | (~b & d), 0x5A827999
            elif i < 40:
                f, k = b ^ c ^ d, 0x6ED9EBA1
            elif i < 60:
                f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
            else:
                f, k = b ^ c ^ d, 0xCA62C1D6
            a, b, c, d, e = rotl(a, 5) + f + e + np.uint32(k) + w[i], a, rotl(b, 30), c, d
        h = [x + y for x, y in zip(h, (a, b, c, d, e), strict=True)]
    return (h[0].astype(np.uint64) << np.uint64(32)) | h[1].astype(np.uint64)


def template_columns(template: str) -> list[str]:
    """The clips columns a prompt template names, in order."""
    return list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))


def prompt_template(config: DataConfig) -> str:
    """train.data.prompt_template, or the caption column as it is."""
    return config.prompt_template or f"{{{config.caption_column}}}"


def render_prompts(columns: Mapping[str, Sequence[Any]], template: str, rows: int) -> list[str]:
    """One prompt per row: `template` filled with the row's values (null = empty), with the spaces
    and punctuation an empty value leaves behind tidied ("a cat, ." -> "a cat.")."""
    names = template_columns(template)
    out = []
    for i in range(rows):
        values = {n: "" if columns[n][i] is None else str(columns[n][i]).strip() for n in names}
        text = template.format(**values)
        text = _SPACE_BEFORE_MARK.sub(r"\1", _SPACES.sub(" ", text)).strip()
        out.append(_LONE_MARKS.sub("", text).lstrip(".,;:!? ").strip())
    return out


_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,;:!?])")
# A run of marks keeps its last ("a car, ." -> "a car."); a prompt never starts with one.
_LONE_MARKS = re.compile(r"[.,;:!?]+(?=[.,;:!?])")


@dataclass
class ClipIndex:
    """Which clips train, in which bucket: numpy arrays only, aligned by position.

    `row_ids` are the clips' Lance stable row ids at `version`; `bucket_codes` index `bucket_list`;
    `split_keys` is the clip_id hash that decides the validation split (see `split_keys()`)."""

    uri: str
    version: int
    row_ids: np.ndarray  # uint64
    bucket_codes: np.ndarray  # int16
    bucket_list: tuple[Bucket, ...]
    split_keys: np.ndarray  # uint64
    has_latents: bool
    skipped: dict[str, int] = field(default_factory=dict)
    # train.data.prompt_template (None: the caption column as it is).
    prompt_template: str | None = None

    def bucket(self, position: int) -> Bucket:
        return self.bucket_list[int(self.bucket_codes[position])]

    def subset(self, keep: np.ndarray) -> ClipIndex:
        return ClipIndex(
            self.uri,
            self.version,
            self.row_ids[keep],
            self.bucket_codes[keep],
            self.bucket_list,
            self.split_keys[keep],
            self.has_latents,
            dict(self.skipped),
            self.prompt_template,
        )

    def validation_mask(self, fraction: float) -> np.ndarray:
        # uint64 -> float64 rounds to nearest like Python's int / 2**64, so this is `is_validation`.
        return self.split_keys.astype(np.float64) / 2.0**64 < fraction

    def split(self, val_fraction: float) -> tuple[ClipIndex, ClipIndex]:
        val = self.validation_mask(val_fraction)
        return self.subset(~val), self.subset(val)

    def read(self, columns: Sequence[str], positions: Sequence[int] | np.ndarray | None = None) -> pa.Table:
        """Columns of the clips at `positions` (all when None: for small indices), in that order,
        read by row id at the index's version."""
        ids = self.row_ids if positions is None else self.row_ids[np.asarray(positions, np.int64)]
        return ClipReader(lance.dataset(self.uri, version=self.version)).columns(ids.tolist(), columns)

    def __len__(self) -> int:
        return len(self.row_ids)


def _check_filter(ds: lance.LanceDataset, expression: str, key: str) -> None:
    """Fail early, in one line, on a filter Lance cannot run (a scan would fail only when first read)."""
    try:
        check_on(ds, parse_filter(expression, key, ds.schema.names))
    except FilterError as err:
        raise TrainDataError(str(err)) from None


def build_index(
    uri: str, config: DataConfig, require_captions: bool = True, settings: str = "train.data"
) -> ClipIndex:
    """Select, bucket and index the clips to train on; `require_captions=False` for the autoencoder,
    which learns from pixels alone; `settings` is the config section errors name. Streams the clips
    once; memory is the index plus one batch."""
    ds = lance.dataset(uri, metadata_cache_size_bytes=SCAN_METADATA_CACHE_BYTES)
    names = set(ds.schema.names)
    if require_captions and config.caption_column not in names:
        raise TrainDataError(
            f"clips at {uri} have no '{config.caption_column}' column: run `reelforge caption` first "
            "or set train.data.caption_column"
        )
    unknown = [c for c in template_columns(config.prompt_template or "") if c not in names]
    if require_captions and unknown:
        raise TrainDataError(
            f"train.data.prompt_template names {unknown}, not columns of the clips at {uri} "
            "(caption_camera, caption_motion and caption_text come from `reelforge score`)"
        )
    has_latents = all(c in names for c in LATENT_COLUMNS)
    if config.latents == "precomputed" and not has_latents:
        raise TrainDataError(
            f"train.data.latents=precomputed but clips at {uri} have no latent columns: run `reelforge encode`"
        )
    use_latents = has_latents and config.latents != "decode"
    if config.filter:
        _check_filter(ds, config.filter, f"{settings}.filter")
    buckets = tuple(config.buckets)
    columns = ["clip_id", "width", "height", "num_frames"]
    columns += [config.caption_column] if require_captions else []
    columns += ["latent_bucket"] if use_latents else []
    names_of_codes = pa.array([bucket_name(b) for b in buckets])
    skipped = {"no caption": 0, "shorter than every bucket": 0, "not encoded for its bucket": 0}
    row_ids: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    for batch in ds.to_batches(
        columns=columns,
        filter=config.filter or None,
        with_row_id=True,
        batch_size=INDEX_BATCH_ROWS,
        strict_batch_size=True,
    ):
        if batch.num_rows == 0:
            continue
        width, height, frames = (
            pc.fill_null(batch[c], 0).to_numpy() for c in ("width", "height", "num_frames")
        )
        code = assign_buckets(width, height, frames, buckets)
        keep = np.ones(batch.num_rows, bool)
        if require_captions:
            caption = pc.utf8_trim_whitespace(batch[config.caption_column])
            has_caption = pc.fill_null(pc.greater(pc.utf8_length(caption), 0), False).to_numpy(
                zero_copy_only=False
            )
            skipped["no caption"] += int(np.count_nonzero(keep & ~has_caption))
            keep &= has_caption
        short = keep & (code == NO_BUCKET)
        skipped["shorter than every bucket"] += int(np.count_nonzero(short))
        keep &= ~short
        if use_latents and keep.any():
            fits = np.flatnonzero(keep)
            wanted = names_of_codes.take(pa.array(code[fits]))
            same = pc.equal(batch["latent_bucket"].take(pa.array(fits)), wanted)
            encoded = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
            skipped["not encoded for its bucket"] += int(np.count_nonzero(~encoded))
            keep[fits[~encoded]] = False
        chosen = np.flatnonzero(keep)
        row_ids.append(batch[ROW_ID].to_numpy()[chosen])
        codes.append(code[chosen])
        keys.append(split_keys(batch["clip_id"].take(pa.array(chosen))))
    skipped = {reason: count for reason, count in skipped.items() if count}
    if use_latents and skipped.get("not encoded for its bucket") and config.latents == "auto":
        # Some clips lack latents for the configured buckets: decoding everything is the honest fallback.
        log.warning("some clips are not encoded for the configured buckets; decoding clips on the fly")
        return build_index(uri, config.model_copy(update={"latents": "decode"}), require_captions, settings)
    if skipped:
        log.info("clips left out of training: %s", skipped)
    return ClipIndex(
        uri,
        ds.version,
        np.concatenate(row_ids) if row_ids else np.zeros(0, np.uint64),
        np.concatenate(codes) if codes else np.zeros(0, np.int16),
        buckets,
        np.concatenate(keys) if keys else np.zeros(0, np.uint64),
        use_latents,
        skipped,
        config.prompt_template,
    )


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


class ClipBatches(Dataset):
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


def read_latents(ds: lance.LanceDataset, row_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """The encode stage's columns for these rows (by stable row id): latent (B, C, T, H, W), text (B, L, E),
    text_mask (B, L)."""
    return latent_tensors(ClipReader(ds).columns([int(r) for r in row_ids], list(LATENT_INPUTS)))


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
) -> DataLoader:
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
