"""Which clips train, in which bucket: `build_index` streams the small columns of the `clips` table
once at one dataset version, with the config's SQL filter pushed into the scan, assigns every clip to
the resolution x length bucket that fits it best, and keeps only numpy arrays (~19 bytes a clip): the
clips' stable row ids, their bucket codes and the hash that splits train/validation by clip_id (stable
across runs and machines). Captions, blobs and latents stay in Lance and are read per batch by row id
(train/loader.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store import ROW_ID, ClipReader
from store.filters import FilterError, check_on, parse_filter
from train.config import Bucket, DataConfig
from train.prompts import template_columns

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
    """The bucket's name: HxWxT."""
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
    """Is the clip in the validation split? (A hash of its id, so the split is stable.)"""
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
        """The bucket of the clip at `position`."""
        return self.bucket_list[int(self.bucket_codes[position])]

    def subset(self, keep: np.ndarray) -> ClipIndex:
        """The index of the positions where `keep` is true."""
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
        """Which positions are in the validation split (`is_validation` of each clip)."""
        # uint64 -> float64 rounds to nearest like Python's int / 2**64, so this is `is_validation`.
        return self.split_keys.astype(np.float64) / 2.0**64 < fraction

    def split(self, val_fraction: float) -> tuple[ClipIndex, ClipIndex]:
        """The training and validation indices."""
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


def build_index(  # noqa: PLR0915 — one streaming pass selects, buckets and indexes together
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
