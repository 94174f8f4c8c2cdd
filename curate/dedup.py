"""Duplicate detection over a whole clips table: exact (content hash) and near (cosine similarity).

Rows are never deleted: each duplicate clip gets `duplicate_of` = the clip_id of its original. The
rule visits clips in clip_id order, so the result is deterministic:

- exact: among clips with the same content_hash the first is the original, every later one its
  duplicate;
- near: any other clip becomes a duplicate of its MOST similar earlier ORIGINAL (ties: the earliest)
  when their cosine similarity is >= threshold. Only originals are candidates, so similarity never
  chains through a series of small changes, and an exact duplicate is never one.

A row whose vector is null, non-finite or zero takes part in the hash check only; a row without a
hash in the vector check only.

The whole table is never held: `batches()` is streamed once here and twice more by the near search.
Pass 1 keeps row ids, clip ids, hashes, which vectors are usable, and a training sample: the
`train_rows` vectors with the smallest hash of their bits (a bottom-k sample, so it does not depend
on the order rows arrive in). Clip ids are ranked; exact duplicates come from a sort by (hash, rank).
The vectors of the clips that are not exact duplicates then go to the vector-index search
(curate/near_search.py), which finds the near pairs and applies the rule to them; every other clip
is an original. Memory here: ~100 bytes per clip for ids and hashes, the sample and one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.config import DedupConfig
from curate.near_search import Batches, BottomK, RowIndex, fit_search, near_duplicates, read_vectors

OUTPUT_SCHEMA = pa.schema([("_rowid", pa.uint64()), ("clip_id", pa.string()), ("duplicate_of", pa.string())])


def frame_signature(frames: np.ndarray, slots: int = 4, side: int = 16) -> np.ndarray:
    """Model-free near-duplicate signature of (n, H, W, 3) frames: `slots` frames spread over the clip,
    each as a side x side grey thumbnail with zero mean and unit norm, concatenated and renormalised."""
    import cv2

    idx = np.linspace(0, frames.shape[0] - 1, num=slots).round().astype(int)
    parts = []
    for i in idx:
        grey = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        small -= small.mean()
        parts.append(small / max(float(np.linalg.norm(small)), 1e-6))
    sig = np.concatenate(parts)
    return (sig / max(float(np.linalg.norm(sig)), 1e-6)).astype(np.float32)


def find_duplicates(
    clip_ids: Sequence[str],
    content_hashes: Sequence[str | None],
    vectors: np.ndarray | None,
    cfg: DedupConfig,
) -> list[str | None]:
    """duplicate_of for each clip (same order as clip_ids), in memory: a thin wrapper over
    `find_duplicates_streaming`. Rows whose vector has NaNs or whose hash is None take part only in
    the checks they have data for."""
    n = len(clip_ids)
    if len(content_hashes) != n or (vectors is not None and (vectors.ndim != 2 or vectors.shape[0] != n)):
        raise ValueError("clip_ids, content_hashes and vectors must have one entry per clip")
    columns: dict[str, Any] = {
        "_rowid": pa.array(np.arange(n, dtype=np.uint64)),
        "clip_id": pa.array(clip_ids, pa.string()),
        "content_hash": pa.array(content_hashes, pa.string()),
    }
    if vectors is not None:
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = pa.table(columns)
    batches = table.to_batches(max_chunksize=cfg.batch_rows)
    found = find_duplicates_streaming(lambda: batches, None if vectors is None else "vector", cfg)
    duplicate_of: list[str | None] = [None] * n
    for row, original in zip(found["_rowid"].to_pylist(), found["duplicate_of"].to_pylist(), strict=True):
        duplicate_of[row] = original
    return duplicate_of


def find_duplicates_streaming(batches: Batches, vector_column: str | None, cfg: DedupConfig) -> pa.Table:
    """The duplicate clips of a clips table streamed by `batches()` (a fresh iterator per call; batches
    in any order, with `_rowid` uint64, `clip_id`, `content_hash` and, unless `vector_column` is None,
    that fixed_size_list<float32> column). Returns `_rowid`, `clip_id`, `duplicate_of` of the
    duplicates only, in clip_id order; originals are not listed."""
    rowids, clip_ids, hashes, usable, sample = _first_pass(batches, vector_column, cfg.train_rows)
    if not len(rowids):
        return OUTPUT_SCHEMA.empty_table()
    order = (
        pc.sort_indices(
            pa.table({"clip_id": clip_ids, "_rowid": rowids}),
            sort_keys=[("clip_id", "ascending"), ("_rowid", "ascending")],
        )
        .to_numpy()
        .astype(np.int64)
    )
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    dup_rows, orig_rows = _exact_duplicates(hashes, rank)
    del hashes

    if vector_column is not None and sample is not None:
        usable[dup_rows] = False  # an exact duplicate is neither an original nor searched for
        pos_to_row = order[usable[order]]  # id -> row, ids in clip_id order
        if len(pos_to_row) > 1:
            axes, centroids = fit_search(sample, len(pos_to_row), cfg)
            del sample  # the full-width sample is the largest thing held before the projected vectors
            near_dup, near_orig = near_duplicates(
                batches, vector_column, cfg, axes, centroids, RowIndex(rowids, pos_to_row)
            )
            dup_rows = np.concatenate([dup_rows, pos_to_row[near_dup]])
            orig_rows = np.concatenate([orig_rows, pos_to_row[near_orig]])

    by_clip = np.argsort(rank[dup_rows])
    dup_rows, orig_rows = dup_rows[by_clip], orig_rows[by_clip]
    return pa.table(
        {
            "_rowid": pa.array(rowids[dup_rows], pa.uint64()),
            "clip_id": clip_ids.take(dup_rows),
            "duplicate_of": clip_ids.take(orig_rows),
        },
        schema=OUTPUT_SCHEMA,
    )


def _first_pass(
    batches: Batches, vector_column: str | None, train_rows: int
) -> tuple[np.ndarray, pa.Array, pa.Array, np.ndarray, np.ndarray | None]:
    """Row ids, clip ids, content hashes and usable-vector flags of all rows, and the training sample
    (unit vectors ordered by key; None when no row has a usable vector)."""
    rowids: list[np.ndarray] = []
    clip_ids: list[pa.Array] = []
    hashes: list[pa.Array] = []
    usable: list[np.ndarray] = []
    sample = BottomK(train_rows)
    for batch in batches():
        # Copies, not views: a reader may decode a whole batch into one allocation (Lance does), so a
        # view of its small columns held the batch's vectors too (at 10^6 clips, 2.4 GB by the end of
        # this pass).
        rowids.append(np.array(batch.column("_rowid").to_numpy(), dtype=np.uint64, copy=True))
        clip_ids.append(_copied(batch.column("clip_id").cast(pa.string())))
        hashes.append(_copied(batch.column("content_hash").cast(pa.string())))
        if vector_column is None:
            usable.append(np.zeros(len(batch), dtype=bool))
        else:
            x, ok = read_vectors(batch, vector_column)
            usable.append(ok)
            sample.offer(x, ok)
    if not rowids:
        return (
            np.empty(0, np.uint64),
            pa.array([], pa.string()),
            pa.array([], pa.string()),
            np.empty(0, bool),
            None,
        )
    return (
        np.concatenate(rowids),
        pa.concat_arrays(clip_ids),
        pa.concat_arrays(hashes),
        np.concatenate(usable),
        sample.rows_by_key(),
    )


def _copied(array: pa.Array) -> pa.Array:
    """The array in buffers of its own (concatenation copies, also of a single array)."""
    return pa.concat_arrays([array])


def _exact_duplicates(hashes: pa.Array, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate rows, their original rows): per hash, the row of lowest rank is the original."""
    codes = pc.fill_null(pc.dictionary_encode(hashes).indices, -1).to_numpy()
    rows = np.flatnonzero(codes >= 0)
    if not len(rows):
        return rows, rows
    rows = rows[np.lexsort((rank[rows], codes[rows]))]
    starts = np.r_[True, codes[rows][1:] != codes[rows][:-1]]
    first = rows[np.maximum.accumulate(np.where(starts, np.arange(len(rows)), 0))]
    return rows[~starts], first[~starts]
