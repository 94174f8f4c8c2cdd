"""The vector-index near-duplicate search against the brute-force rule, on planted duplicates."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from curate.config import DedupConfig
from curate.dedup import OUTPUT_SCHEMA, find_duplicates, find_duplicates_streaming

THRESHOLD = 0.95
CFG = DedupConfig(threshold=THRESHOLD)


def _at_cosine(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly cosine `cos` from unit vector v."""
    u = rng.normal(size=v.shape)
    u -= (u @ v) * v
    return cos * v + np.sqrt(1 - cos**2) * u / np.linalg.norm(u)


def _reference(ids: list[str], hashes: list[str | None], x: np.ndarray, threshold: float) -> list[str | None]:
    """The rule by brute force: every pair's cosine, clips visited one by one in clip_id order."""
    n = len(ids)
    order = sorted(range(n), key=ids.__getitem__)
    rank = {i: r for r, i in enumerate(order)}
    dup: list[str | None] = [None] * n
    first: dict[str, int] = {}
    for i in order:
        h = hashes[i]
        if h is not None:
            if h in first:
                dup[i] = ids[first[h]]
            else:
                first[h] = i
    usable = np.isfinite(x).all(axis=1) & (x != 0).any(axis=1)
    unit = np.where(usable[:, None], x, 0).astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    neighbours: dict[int, dict[int, float]] = defaultdict(dict)
    for s in range(0, n, 2048):  # upper triangle, float32 prefilter, float64 decision
        rows, cols = np.nonzero(unit[s : s + 2048] @ unit[s:].T >= threshold - 1e-3)
        for r, c in zip((rows + s).tolist(), (cols + s).tolist(), strict=True):
            a, b = x[r].astype(np.float64), x[c].astype(np.float64)
            cos = float(a @ b / np.sqrt((a @ a) * (b @ b)))
            if r < c and cos >= threshold:
                neighbours[r][c] = neighbours[c][r] = cos
    originals: set[int] = set()
    for j in order:
        if dup[j] is not None or not usable[j]:
            continue
        pool = [(-cos, rank[i], i) for i, cos in neighbours[j].items() if i in originals]
        if pool:
            dup[j] = ids[min(pool)[2]]
        else:
            originals.add(j)
    return dup


@pytest.fixture(scope="module")
def planted():
    """12k random unit vectors (dim 512) with planted near-duplicate pairs and groups (cosine
    0.96-0.995 to their original), far pairs just under the threshold, exact copies (same hash and
    vector), NaN vectors and missing hashes; clip ids in an order unrelated to the rows."""
    rng = np.random.default_rng(7)
    n, dim = 12_000, 512  # the brute-force reference is n^2 * dim: 12k keeps it to a few seconds
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    hashes: list[str | None] = [f"h{i}" for i in range(n)]
    rows = iter(rng.permutation(n).tolist())
    pairs = []
    for _ in range(200):  # near-duplicate pairs
        o, c = next(rows), next(rows)
        x[c] = _at_cosine(x[o], rng.uniform(0.96, 0.995), rng)
        pairs.append((o, c))
    for _ in range(60):  # groups: an original and three copies of it
        o = next(rows)
        for _ in range(3):
            x[next(rows)] = _at_cosine(x[o], rng.uniform(0.96, 0.995), rng)
    far = []
    for _ in range(150):  # just under the threshold
        o, c = next(rows), next(rows)
        x[c] = _at_cosine(x[o], rng.uniform(0.90, 0.945), rng)
        far.append((o, c))
    exact = []
    for _ in range(80):
        o, c = next(rows), next(rows)
        x[c], hashes[c] = x[o], hashes[o]
        exact.append((o, c))
    for _ in range(40):
        x[next(rows)] = np.nan
    for _ in range(40):
        hashes[next(rows)] = None
    ids = [f"clip{i:06d}" for i in rng.permutation(n)]
    vectors = x.astype(np.float32)
    return {
        "ids": ids,
        "hashes": hashes,
        "vectors": vectors,
        "pairs": pairs,
        "far": far,
        "exact": exact,
        "reference": _reference(ids, hashes, vectors, THRESHOLD),
    }


def _table(data: dict) -> pa.Table:
    x = data["vectors"]
    return pa.table(
        {
            "_rowid": pa.array(np.arange(len(x), dtype=np.uint64)),
            "clip_id": pa.array(data["ids"]),
            "content_hash": pa.array(data["hashes"], pa.string()),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
        }
    )


def _roots(dup: list[str | None], ids: list[str]) -> list[str]:
    """The clip each clip's duplicate_of chain ends at (itself for an original)."""
    by_id = {c: k for k, c in enumerate(ids)}
    roots = []
    for i in range(len(ids)):
        while dup[i] is not None:
            i = by_id[dup[i]]
        roots.append(ids[i])
    return roots


@pytest.fixture(scope="module")
def found(planted) -> list[str | None]:
    return find_duplicates(planted["ids"], planted["hashes"], planted["vectors"], CFG)


def test_index_search_matches_the_brute_force_rule(planted, found):
    ids, hashes, x, reference = planted["ids"], planted["hashes"], planted["vectors"], planted["reference"]
    dup = found

    assert np.mean([a == b for a, b in zip(dup, reference, strict=True)]) >= 0.999
    near_ref = [i for i, d in enumerate(reference) if d is not None]
    assert len(near_ref) > 350
    assert sum(dup[i] == reference[i] for i in near_ref) >= 0.99 * len(near_ref)

    # The exact re-score leaves no false pair: every near duplicate reported is at the threshold.
    by_id = {c: k for k, c in enumerate(ids)}
    for i, d in enumerate(dup):
        if d is not None and (hashes[i] is None or hashes[i] != hashes[by_id[d]]):
            a, b = x[i].astype(np.float64), x[by_id[d]].astype(np.float64)
            assert a @ b / np.sqrt((a @ a) * (b @ b)) >= THRESHOLD

    roots = _roots(dup, ids)
    assert sum(roots[o] == roots[c] for o, c in planted["pairs"]) >= 0.99 * len(planted["pairs"])
    assert all(roots[o] != roots[c] for o, c in planted["far"])
    for o, c in planted["exact"]:
        first, later = sorted((o, c), key=ids.__getitem__)
        assert dup[later] == ids[first]


def test_same_result_whatever_the_batch_order_and_size(planted, found):
    table = _table(planted)
    small = table.to_batches(max_chunksize=3000)
    shuffled = [small[i] for i in np.random.default_rng(1).permutation(len(small))]
    first = find_duplicates_streaming(lambda: shuffled, "vec", CFG)
    assert first.schema == OUTPUT_SCHEMA
    assert first["clip_id"].to_pylist() == sorted(first["clip_id"].to_pylist())
    by_row = dict(zip(first["_rowid"].to_pylist(), first["duplicate_of"].to_pylist(), strict=True))
    assert [by_row.get(i) for i in range(table.num_rows)] == found  # `found` came in one batch
    # Re-scoring with a budget of 1 MB holds 256 candidate vectors at a time: many passes, same result.
    large = table.to_batches(max_chunksize=7000)[::-1]
    assert first.equals(
        find_duplicates_streaming(lambda: large, "vec", CFG.model_copy(update={"rescore_mb": 1}))
    )


def test_only_originals_match_and_the_most_similar_wins():
    rng = np.random.default_rng(3)
    a = rng.normal(size=16)
    a /= np.linalg.norm(a)
    b = _at_cosine(a, 0.97, rng)
    c = _at_cosine(b, 0.97, rng)
    while c @ a >= 0.95:  # c is near b only, and b is a duplicate of a: c must not chain to it
        c = _at_cosine(b, 0.97, rng)
    e = 0.45 * a + 0.55 * c
    e /= np.linalg.norm(e)
    assert e @ c > e @ a >= THRESHOLD  # e is near both originals, nearer the later one
    vectors = np.stack([a, b, c, e]).astype(np.float32)
    assert find_duplicates(["1", "2", "3", "4"], [None] * 4, vectors, CFG) == [None, "1", None, "3"]


def test_exact_duplicates_and_missing_data():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(6, 8)).astype(np.float32)
    v[4] = v[3] * 2  # same direction as "d" (cosine 1), but d is an exact duplicate of "a"
    v[5, 0] = np.nan
    ids = ["c", "a", "b", "d", "e", "f"]
    hashes = ["h1", "h1", None, "h1", "h2", None]
    vectors = pa.array([None if i == 2 else v[i].tolist() for i in range(6)], pa.list_(pa.float32(), 8))
    table = pa.table(
        {
            "_rowid": pa.array(np.arange(10, 16, dtype=np.uint64)),
            "clip_id": ids,
            "content_hash": pa.array(hashes, pa.string()),
            "v": vectors,
        }
    )
    # b has no vector and f a NaN in it: they take part in the hash check only.
    out = find_duplicates_streaming(lambda: table.to_batches(max_chunksize=4), "v", CFG)
    assert out.to_pydict() == {"_rowid": [10, 13], "clip_id": ["c", "d"], "duplicate_of": ["a", "a"]}
    assert find_duplicates_streaming(lambda: table.to_batches(), None, CFG).equals(out)
    # Without hashes d is an original, and e (one direction with it, later) its duplicate.
    assert find_duplicates(ids, [None] * 6, v, CFG) == [None, None, None, None, "d", None]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_inputs(n):
    v = np.ones((n, 4), dtype=np.float32)
    ids = ["b", "a"][:n]
    expected = [[], [None], ["a", None]][n]
    assert find_duplicates(ids, [None] * n, v, CFG) == expected
    assert find_duplicates(ids, ["h"] * n, None, CFG) == expected
    assert find_duplicates(ids, [None] * n, None, CFG) == [None] * n
    assert find_duplicates_streaming(list, "v", CFG).equals(OUTPUT_SCHEMA.empty_table())
