"""The near-duplicate search of curate/dedup.py: a vector index over a streamed clips table.

It scales to millions of clips without ever holding all full vectors (10^6 x 512 float32 is 2 GB):
`batches()` is streamed twice more after curate/dedup.py's first pass.

1. A PCA to `pca_dim` (orthonormal axes, so it can only shorten a distance) and the k-means
   centroids of `lists` inverted lists are fitted on the first pass's sample (`BottomK`). Pass 2
   keeps the projected unit vector of every clip that has one and is not an exact duplicate, at its
   position in clip_id order (its id).
2. IVF search: each clip belongs to the list of its nearest centroid and probes its `nprobe` nearest
   lists (faiss IndexFlatL2, in fixed id blocks). For unit vectors |a - b|^2 = 2 - 2 cos(a, b) and the
   projection never lengthens it, so every pair with cos >= threshold lies within radius
   2 - 2 * threshold (+ a float32 slack) of each other: a pair is missed only when neither clip
   probes the other's list. That is the one approximation. Each list's members are compared with
   all clips probing it in one matrix product, which finds the same pairs as faiss's IndexIVFFlat
   range search at a few times its speed (its per-pair distance loop runs at ~60 ns per 128-d pair
   on a 2-core VM, BLAS at a fraction of that).
3. The candidate pairs are re-scored exactly (float64 cosine of the stored float32 vectors), which
   drops every candidate under the threshold. Pass 3 keeps only the candidate clips' vectors, at
   most `rescore_mb` of them at once (one extra pass per half of that budget beyond it).
4. The rule runs over the true pairs only, in clip_id order.

So the decisions are exactly the brute-force rule's on every pair the probing finds. Memory:
4 * pca_dim bytes per clip for the projected vectors, the sample, one batch, and 16 bytes per
candidate pair (m mutually near-identical clips give m^2 / 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa

from curate.config import DedupConfig

# Added to the search radius (a squared distance of unit vectors): float32 rounding in the
# normalisation, the projection and the distances is ~1e-6; the few extra candidates this
# admits are dropped by the exact re-score.
_RADIUS_SLACK = 1e-4
# Training vectors per list at least: the lists only route vectors (a rough partition is enough), and
# 16 per list finds as many planted pairs as faiss's advised 39 (measured on random 512-d data).
_MIN_TRAIN_PER_LIST = 16
# The quantizer only routes vectors to lists (misses are set by nprobe); 10 iterations converge
# enough for that at a fraction of faiss's default 25.
_KMEANS_ITERATIONS = 10
# Pairs whose float64 cosines are computed at once: 2 x 8192 x D x 8 bytes of temporaries.
_PAIR_CHUNK = 8192
# Entries of one query x member distance matrix (16 MB of float32).
_PAIR_BLOCK = 1 << 22

Batches = Callable[[], Iterable[pa.RecordBatch]]


def read_vectors(batch: pa.RecordBatch, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The batch's vectors as float32 (n, D), and which rows are usable (not null, finite, non-zero);
    unusable rows hold anything."""
    arr = batch.column(column)
    if not pa.types.is_fixed_size_list(arr.type):
        raise TypeError(f"{column} must be a fixed_size_list of floats, not {arr.type}")
    dim = arr.type.list_size
    # .values ignores the array's offset, so slice it by hand; null floats become NaN.
    values = arr.values.slice(arr.offset * dim, len(arr) * dim).to_numpy(zero_copy_only=False)
    x = np.asarray(values, dtype=np.float32).reshape(len(arr), dim)
    usable = np.isfinite(x).all(axis=1) & (x != 0).any(axis=1)
    if arr.null_count:
        usable &= ~arr.is_null().to_numpy(zero_copy_only=False)
    return x, usable


def _norms(x: np.ndarray) -> np.ndarray:
    norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", x, x))  # no (n, D) temporary, unlike np.linalg.norm
    return norms


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / _norms(x)[:, None], dtype=np.float32)


def _sample_keys(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's float bits, so the rows with the smallest keys are a uniform sample
    that depends on the rows only, not on their order (equal keys mean equal rows)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # Odd multipliers: a linear hash mod 2^64 that no single-coordinate change can leave unchanged.
    mult = np.asarray(np.random.default_rng(0x5EED).integers(1, 2**63, size=x.shape[1], dtype=np.uint64))
    mult |= np.uint64(1)
    key = np.zeros(len(x), dtype=np.uint64)
    for start in range(0, x.shape[1], 64):  # 64 columns at a time bounds the uint64 temporary
        part = bits[:, start : start + 64].astype(np.uint64) * mult[start : start + 64]
        key += part.sum(axis=1, dtype=np.uint64)
    # splitmix64's finaliser spreads every input bit over the high bits that decide the order.
    key ^= key >> np.uint64(30)
    key *= np.uint64(0xBF58476D1CE4E5B9)
    key ^= key >> np.uint64(27)
    key *= np.uint64(0x94D049BB133111EB)
    key ^= key >> np.uint64(31)
    return key


class BottomK:
    """The unit vectors of the k usable rows with the smallest `_sample_keys` seen so far."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys = np.empty(0, dtype=np.uint64)
        self.rows: np.ndarray | None = None  # k rows; the first len(keys) are used

    def offer(self, x: np.ndarray, usable: np.ndarray) -> None:
        """Offer rows `x` (those where `usable`) to the sample; keeps the k with the smallest keys."""
        keys = _sample_keys(x)
        if len(self.keys) == self.k:
            usable = usable & (keys < self.keys.max())
        take = np.flatnonzero(usable)
        if len(take) > self.k:
            take = take[np.argpartition(keys[take], self.k - 1)[: self.k]]
        if not len(take):
            return
        keys, rows = keys[take], _unit(x[take])  # only the rows that may enter are normalised
        # Keep the k smallest of old and new; ties on the k-th key are equal rows, so which one stays
        # does not matter. New rows overwrite evicted slots in place, then fill free capacity.
        merged = np.concatenate([self.keys, keys])
        kept = np.zeros(len(merged), dtype=bool)
        kept[np.argpartition(merged, min(self.k, len(merged)) - 1)[: self.k]] = True
        free = np.flatnonzero(~kept[: len(self.keys)])
        incoming = np.flatnonzero(kept[len(self.keys) :])
        size = len(self.keys) + len(incoming) - len(free)
        if self.rows is None:
            # All k rows at once: the pages of an untouched np.empty cost no memory until written, and
            # growing by copies held the old and the new array at once (up to 1.5x the full sample).
            self.rows = np.empty((self.k, x.shape[1]), dtype=np.float32)
        slots = np.concatenate([free, np.arange(len(self.keys), size)])
        self.keys = np.resize(self.keys, size)
        self.keys[slots] = keys[incoming]
        self.rows[slots] = rows[incoming]

    def rows_by_key(self) -> np.ndarray | None:
        """The sampled rows in key order, or None when nothing was offered."""
        if self.rows is None:
            return None
        return self.rows[np.argsort(self.keys, kind="stable")]


class RowIndex:
    """Index id (-1: not indexed) of rows named by their `_rowid`, whatever batch they come in."""

    def __init__(self, rowids: np.ndarray, pos_to_row: np.ndarray) -> None:
        by_rowid = np.argsort(rowids, kind="stable")
        self.rowids = rowids[by_rowid]
        if len(self.rowids) > 1 and not (self.rowids[1:] != self.rowids[:-1]).all():
            raise ValueError("_rowid values must be unique")
        self.count = len(pos_to_row)
        pos = np.full(len(rowids), -1, dtype=np.int64)
        pos[pos_to_row] = np.arange(self.count)
        self.pos = pos[by_rowid]

    def positions(self, batch: pa.RecordBatch) -> np.ndarray:
        """The positions of a batch's rows in the first pass's order."""
        rowids = np.asarray(batch.column("_rowid").to_numpy(), dtype=np.uint64)
        at = np.minimum(np.searchsorted(self.rowids, rowids), len(self.rowids) - 1)
        if not (self.rowids[at] == rowids).all():
            raise ValueError("batches() returned rows its first pass did not")
        return self.pos[at]


def fit_search(sample: np.ndarray, count: int, cfg: DedupConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """The projection axes (None: none) and the lists' centroids, fitted on the sample."""
    axes = _principal_axes(sample, cfg.pca_dim)
    return axes, _centroids(sample if axes is None else sample @ axes, count, cfg)


def near_duplicates(
    batches: Batches,
    column: str,
    cfg: DedupConfig,
    axes: np.ndarray | None,
    centroids: np.ndarray,
    rows: RowIndex,
) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate ids, original ids) among the searched vectors, ids being clip_id order."""
    dim = centroids.shape[1] if axes is None else axes.shape[0]
    projected = np.empty((rows.count, centroids.shape[1]), dtype=np.float32)
    added = 0
    for batch in batches():
        pos = rows.positions(batch)
        take = np.flatnonzero(pos >= 0)
        if len(take):
            x = read_vectors(batch, column)[0]
            if axes is None:
                projected[pos[take]] = _unit(x[take])
            else:  # project, then scale by the full norm: the same as projecting the unit vector
                projected[pos[take]] = (x @ axes)[take] / _norms(x)[take, None]
            added += len(take)
    if added != rows.count:
        raise ValueError("batches() returned other rows than in its first pass")

    radius = 2.0 - 2.0 * cfg.threshold + _RADIUS_SLACK
    lo, hi = _candidate_pairs(projected, centroids, cfg.nprobe, radius, cfg.batch_rows)
    del projected  # frees 4 * pca_dim bytes per clip before the re-score holds vectors
    sims = _exact_cosines(batches, column, rows, lo, hi, dim, cfg.rescore_mb)
    return _apply_rule(lo, hi, sims, cfg.threshold, rows.count)


def _principal_axes(sample: np.ndarray, dim: int) -> np.ndarray | None:
    """The sample's top-`dim` principal axes as orthonormal columns (D, dim), or None to keep the
    vectors as they are (dim 0 or not smaller than D). Orthonormal axes never lengthen a distance."""
    size = sample.shape[1]
    if dim == 0 or dim >= size:
        return None
    mean = sample.mean(axis=0, dtype=np.float64)
    cov = np.zeros((size, size))
    for start in range(0, len(sample), _PAIR_CHUNK):  # float64 in chunks: no float64 copy of the sample
        part = sample[start : start + _PAIR_CHUNK].astype(np.float64) - mean
        cov += part.T @ part
    _, axes = np.linalg.eigh(cov)  # ascending eigenvalues
    return np.ascontiguousarray(axes[:, ::-1][:, :dim], dtype=np.float32)


def _centroids(train: np.ndarray, count: int, cfg: DedupConfig) -> np.ndarray:
    """The lists' k-means centroids, fitted on the (projected) sample."""
    lists = max(1, min(cfg.lists or round(4 * np.sqrt(count)), len(train) // _MIN_TRAIN_PER_LIST))
    if lists == 1:  # every clip probes the one list: an exhaustive search, no k-means needed
        return np.zeros((1, train.shape[1]), dtype=np.float32)
    import faiss

    kmeans = faiss.Kmeans(
        train.shape[1],
        lists,
        niter=_KMEANS_ITERATIONS,
        seed=cfg.seed,
        min_points_per_centroid=_MIN_TRAIN_PER_LIST,
    )
    kmeans.train(np.ascontiguousarray(train))
    return np.asarray(kmeans.centroids)


def _candidate_pairs(
    projected: np.ndarray, centroids: np.ndarray, nprobe: int, radius: float, block_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) ids, lo < hi, sorted, of every pair within `radius` (squared L2) where one clip probes
    the other's list (its nearest centroid).

    Each list's members meet every clip probing the list in one matrix product (|q|^2 + |m|^2 - 2 q.m):
    BLAS does in it what a per-pair distance loop (faiss's IVF scan) does ~5x slower on this kind of
    CPU, and the same pairs are compared."""
    import faiss

    count = len(projected)
    nprobe = min(nprobe, len(centroids))
    quantizer = faiss.IndexFlatL2(projected.shape[1])
    quantizer.add(centroids)
    probes = np.empty((count, nprobe), dtype=np.int32)
    for start in range(0, count, block_rows):  # fixed blocks in id order, whatever the batches were
        probes[start : start + block_rows] = quantizer.search(projected[start : start + block_rows], nprobe)[
            1
        ]
    members = np.argsort(probes[:, 0], kind="stable").astype(np.int32)  # probes come nearest first
    member_bounds = np.searchsorted(probes[members, 0], np.arange(len(centroids) + 1))
    # The clips probing each list, one probe rank at a time (a clip probes a list at most once): int32
    # sorts of one column each, instead of an int64 argsort of all count x nprobe probes and its
    # copies (~300 MB of temporaries at 10^6 clips, nprobe 16).
    probing = np.empty((nprobe, count), dtype=np.int32)
    probe_bounds = np.empty((nprobe, len(centroids) + 1), dtype=np.int64)
    for rank in range(nprobe):
        probing[rank] = np.argsort(probes[:, rank], kind="stable")
        probe_bounds[rank] = np.searchsorted(probes[probing[rank], rank], np.arange(len(centroids) + 1))
    del probes
    half_sq = np.einsum("ij,ij->i", projected, projected) / 2
    half_sq_radius = half_sq - radius / 2
    found = []
    for lst in range(len(centroids)):
        mine = members[member_bounds[lst] : member_bounds[lst + 1]].astype(np.int64)
        if not len(mine):
            continue
        block = projected[mine]
        probers = np.concatenate(
            [probing[r, probe_bounds[r, lst] : probe_bounds[r, lst + 1]] for r in range(nprobe)]
        ).astype(np.int64)
        step = max(1, _PAIR_BLOCK // len(mine))  # bounds the distance matrix of a crowded list
        for start in range(0, len(probers), step):
            query = probers[start : start + step]
            # |q - m|^2 <= radius  <=>  q.m >= (|q|^2 + |m|^2 - radius) / 2
            close = projected[query] @ block.T >= half_sq[query][:, None] + half_sq_radius[mine][None, :]
            qi, mi = np.divmod(np.flatnonzero(close), len(mine))
            lo, hi = np.minimum(query[qi], mine[mi]), np.maximum(query[qi], mine[mi])
            # A pair is found from both clips when each probes the other's list: np.unique keeps one.
            found.append(lo[lo != hi] * count + hi[lo != hi])
    keys = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
    return keys // count, keys % count


def _exact_cosines(
    batches: Batches, column: str, rows: RowIndex, lo: np.ndarray, hi: np.ndarray, dim: int, budget_mb: int
) -> np.ndarray:
    """float64 cosine of every (lo, hi) pair from the full vectors, holding only the candidates'.

    The candidates (sorted ids) are split into consecutive chunks: one when all fit the budget, else
    chunks of half of it, as two are held at once. Pass k loads chunk k while the held chunk k - 1
    meets every later candidate streaming by; the pairs within a chunk are scored once it is loaded.
    lo < hi, so a pair's lo is never in a later chunk than its hi: each pair is scored exactly once."""
    sims = np.empty(len(lo))
    if not len(lo):
        return sims
    candidates = np.unique(np.concatenate([lo, hi]))
    budget_rows = max(2, budget_mb * 2**20 // (4 * dim))
    chunk_rows = len(candidates) if len(candidates) <= budget_rows else budget_rows // 2
    count = rows.count
    chunk = np.full(count, -1, dtype=np.int64)
    chunk[candidates] = np.arange(len(candidates)) // chunk_rows
    slot = np.zeros(count, dtype=np.int64)
    slot[candidates] = np.arange(len(candidates)) % chunk_rows
    in_batch = np.full(count, -1, dtype=np.int64)  # id -> row of the batch at hand
    lo_chunk, hi_chunk = chunk[lo], chunk[hi]
    held = np.empty((0, dim), dtype=np.float32)
    for k in range(-(-len(candidates) // chunk_rows)):
        loading = np.empty((min(chunk_rows, len(candidates) - k * chunk_rows), dim), dtype=np.float32)
        loaded = 0
        cross = np.flatnonzero((lo_chunk == k - 1) & (hi_chunk >= k))
        for batch in batches():
            pos = rows.positions(batch)
            indexed = np.flatnonzero(pos >= 0)
            if not len(indexed):
                continue
            x = read_vectors(batch, column)[0]
            mine = indexed[chunk[pos[indexed]] == k]
            loading[slot[pos[mine]]] = x[mine]
            loaded += len(mine)
            if len(cross):
                in_batch[pos[indexed]] = indexed
                here = cross[in_batch[hi[cross]] >= 0]
                sims[here] = _cosines(held, slot[lo[here]], x, in_batch[hi[here]])
                in_batch[pos[indexed]] = -1
        if loaded != len(loading):
            raise ValueError("batches() returned other rows than in its first pass")
        held = loading
        inner = np.flatnonzero((lo_chunk == k) & (hi_chunk == k))
        sims[inner] = _cosines(held, slot[lo[inner]], held, slot[hi[inner]])
    return sims


def _cosines(a: np.ndarray, a_rows: np.ndarray, b: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    """float64 cosine of a[a_rows[i]] and b[b_rows[i]], in chunks of pairs."""
    out = np.empty(len(a_rows))
    for start in range(0, len(a_rows), _PAIR_CHUNK):
        u = a[a_rows[start : start + _PAIR_CHUNK]].astype(np.float64)
        v = b[b_rows[start : start + _PAIR_CHUNK]].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", u, u) * np.einsum("ij,ij->i", v, v))
        out[start : start + _PAIR_CHUNK] = np.einsum("ij,ij->i", u, v) / norms
    return out


def _apply_rule(
    lo: np.ndarray, hi: np.ndarray, sims: np.ndarray, threshold: float, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate ids, original ids): each clip of a true pair, in id (clip_id) order, becomes a
    duplicate of its most similar earlier original (ties: the earliest); other clips stay originals."""
    true = sims >= threshold
    lo, hi, sims = lo[true], hi[true], sims[true]
    order = np.lexsort((lo, -sims, hi))  # by later clip, then best first
    is_duplicate = np.zeros(count, dtype=bool)
    duplicates: list[int] = []
    originals: list[int] = []
    for earlier, later in zip(lo[order].tolist(), hi[order].tolist(), strict=True):
        # `earlier`'s own pairs came before (sorted by later clip), so its status is final here.
        if is_duplicate[later] or is_duplicate[earlier]:
            continue
        is_duplicate[later] = True
        duplicates.append(later)
        originals.append(earlier)
    return np.array(duplicates, dtype=np.int64), np.array(originals, dtype=np.int64)
