"""Duplicate detection over a whole clips table: exact (content hash) and near (cosine similarity).

Rows are never deleted: each clip gets `duplicate_of` = the clip_id of the original it duplicates,
or null. Clips are visited in clip_id order, so the result is deterministic and the original is
always the first clip of its group. Near duplicates are searched the scalable way: spherical k-means
over the L2-normalised vectors first, then each clip is compared only with earlier originals in its
`probe_clusters` nearest clusters; a clip matches the most similar original at or above the
threshold (originals only, so similarity never chains through a series of small changes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import cast

import numpy as np

from curate.config import DedupConfig


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


def spherical_kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 15) -> np.ndarray:
    """Centroids (k, D) of L2-normalised rows x, by cosine similarity."""
    rng = np.random.default_rng(seed)
    k = min(k, x.shape[0])
    centroids = x[rng.choice(x.shape[0], size=k, replace=False)].copy()
    for _ in range(iterations):
        assign = np.argmax(x @ centroids.T, axis=1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                mean = members.sum(axis=0)
                centroids[c] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return centroids


def find_duplicates(
    clip_ids: Sequence[str],
    content_hashes: Sequence[str | None],
    vectors: np.ndarray | None,
    cfg: DedupConfig,
) -> list[str | None]:
    """duplicate_of for each clip (same order as clip_ids). Rows whose vector has NaNs or whose hash is
    None take part only in the checks they have data for."""
    n = len(clip_ids)
    if len(content_hashes) != n or (vectors is not None and vectors.shape[0] != n):
        raise ValueError("clip_ids, content_hashes and vectors must have one entry per clip")
    order = sorted(range(n), key=lambda i: clip_ids[i])
    duplicate_of: list[str | None] = [None] * n

    first_by_hash: dict[str, int] = {}
    for i in order:
        h = content_hashes[i]
        if h is None:
            continue
        if h in first_by_hash:
            duplicate_of[i] = clip_ids[first_by_hash[h]]
        else:
            first_by_hash[h] = i

    if vectors is None or n == 0:
        return duplicate_of
    x = np.asarray(vectors, dtype=np.float32)
    valid = cast(np.ndarray, ~np.isnan(x).any(axis=1))  # x is 2-D: one flag per row, not a scalar
    norms = np.linalg.norm(np.where(valid[:, None], x, 0.0), axis=1, keepdims=True)
    x = np.where(valid[:, None], x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    candidates = [i for i in order if valid[i] and duplicate_of[i] is None]
    if not candidates:
        return duplicate_of
    k = cfg.clusters or max(1, round(np.sqrt(len(candidates) / 4)))
    centroids = spherical_kmeans(x[candidates], k, cfg.seed)
    nearest = np.argsort(-(x @ centroids.T), axis=1)[:, : cfg.probe_clusters]
    originals: dict[int, list[int]] = defaultdict(list)
    for i in candidates:
        pool = [j for c in nearest[i] for j in originals[int(c)]]
        if pool:
            sims = x[pool] @ x[i]
            best = int(np.argmax(sims))
            if sims[best] >= cfg.threshold:
                duplicate_of[i] = clip_ids[pool[best]]
                continue
        originals[int(nearest[i, 0])].append(i)
    return duplicate_of
