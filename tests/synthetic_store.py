"""Synthetic stores of any size for the memory and scale tests and benchmarks, built in seconds.

`make_store(root, n_clips)` writes a `videos` and a `clips` table the way the jobs do: split-like
appends of one fragment per `clips_per_fragment` clips (fragment files written with
`write_fragments`, committed in one `Append` commit, since one commit per fragment is far too slow
at 10^5 fragments), then the score, dedup, filter and caption columns through `Store.add_columns`,
keyed by the clips' stable row ids, with their stage records. The clip bytes are small distinct
random blobs (they do not decode: a preview of one fails with a reason), the thumbnail is one tiny
JPEG. Every value is a pure function of `seed` and the clip's position, so two stores made with the
same arguments hold the same rows.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import lance
import numpy as np
import pyarrow as pa
from lance.fragment import write_fragments
from PIL import Image

from store import CLIPS, CLIPS_SCHEMA, ROW_ID, VIDEOS, VIDEOS_SCHEMA, Store
from store.filters import parse_filter

CLIPS_PER_VIDEO = 100
FPS = 25.0
# (width, height): landscape, HD, square and portrait clips, so several training buckets fill.
SIZES = np.array([(640, 360), (1280, 720), (480, 480), (360, 640)], np.int32)
# Clip pairs (g, g + 1) with g % DUPLICATE_EVERY == DUPLICATE_EVERY - 2 get nearly equal embeddings;
# the second one is marked as the duplicate of the first.
DUPLICATE_EVERY = 50
# Share of clips whose caption failed (null caption, a caption_error).
CAPTION_FAILURES = 0.02
FILTER = "motion > 0.002 and technical_quality >= 0.3 and aesthetic_mean >= 4.5 and duplicate_of is null"
SCORE_COLUMNS = ("motion", "technical_quality", "aesthetic_mean", "text_area")  # floats: histograms
# The column stages make_store runs, in order.
COLUMN_STAGES = ("score", "dedup", "filter", "caption")
# A store after each of split, score (with its dedup), filter and caption: the column stages made.
CAMERA_WORDS = ("static camera", "the camera pans left slowly", "the camera zooms in")
STATES = {
    "split": (),
    "score": ("score", "dedup"),
    "filter": ("score", "dedup", "filter"),
    "caption": COLUMN_STAGES,
}
# Rows and fragment files written per write_fragments call.
_WRITE_ROWS = 20_000
_FRAGMENTS_PER_WRITE = 100
# Rows per batch of the column stages: a multiple of DUPLICATE_EVERY, so planted pairs share a batch.
_STAGE_ROWS = 10_000


def clip_ids(positions: np.ndarray) -> list[str]:
    """The clip_id of each clip position: video id + start in microseconds, like curate.clip_plan.clip_id."""
    return [
        f"syn{g // CLIPS_PER_VIDEO:013d}_{(g % CLIPS_PER_VIDEO) * 2_000_000:013d}" for g in positions.tolist()
    ]


def make_store(
    root: str | Path,
    n_clips: int,
    clips_per_fragment: int = 10,
    embed_dim: int = 512,
    seed: int = 0,
    blob_bytes: int = 256,
    stages: Sequence[str] = COLUMN_STAGES,
) -> Store:
    """A store at `root` with `n_clips` clips in fragments of `clips_per_fragment` rows, scored
    (motion, technical_quality, aesthetic_mean, text_area, frames_sampled, a null score_error and a
    `clip_embedding` of `embed_dim` floats with planted near duplicates), deduplicated, filtered
    (`selected` by FILTER) and captioned; `stages` names the column stages to run (in that order),
    e.g. () for a store as split leaves it."""
    if blob_bytes < 8:
        raise ValueError("blob_bytes must be at least 8: the clip's position makes each blob distinct")
    store = Store(root)
    store.root.mkdir(parents=True, exist_ok=True)
    _write_videos(store, n_clips)
    _write_clips(store, n_clips, clips_per_fragment, seed, blob_bytes)
    store.index()  # the clip_id and video_id indices, as the split job keeps them
    _add_stages(store, embed_dim, seed, stages)
    return store


def append_clips(store: Store, start: int, stop: int, seed: int = 0, blob_bytes: int = 256) -> None:
    """Append clips at positions start..stop-1 as a later split would: no stage columns for them."""
    store.append(CLIPS, _split_rows(start, stop, seed, blob_bytes, _tiny_jpeg()))


def _write_videos(store: Store, n_clips: int) -> None:
    videos = -(-n_clips // CLIPS_PER_VIDEO)
    ids = [f"syn{v:013d}" for v in range(videos)] + ["syn-broken"]
    rows = pa.table(
        {
            "video_id": ids,
            "uri": [f"footage/{v}.mp4" for v in ids[:-1]] + ["footage/broken.mp4"],
            "status": ["ok"] * videos + ["error"],
            "error": [None] * videos + ["not a video: no stream could be probed"],
            "duration_s": [CLIPS_PER_VIDEO * 2.0] * videos + [None],
            "num_clips": [min(CLIPS_PER_VIDEO, n_clips - v * CLIPS_PER_VIDEO) for v in range(videos)] + [0],
            "processed_at": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * (videos + 1)),
        }
    )
    full = pa.table(
        [rows[f.name] if f.name in rows.column_names else pa.nulls(len(ids), f.type) for f in VIDEOS_SCHEMA],
        schema=VIDEOS_SCHEMA,
    )
    store.append(VIDEOS, full)
    store.record(VIDEOS, "split", {"config": {"source": "synthetic"}, "version": "synthetic"})


def _tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 18), (90, 120, 160)).save(out, format="JPEG", quality=70)
    return out.getvalue()


def _split_rows(start: int, stop: int, seed: int, blob_bytes: int, thumbnail: bytes) -> pa.Table:
    g = np.arange(start, stop, dtype=np.int64)
    n = len(g)
    rng = np.random.default_rng([seed, 1, start])
    in_video = g % CLIPS_PER_VIDEO
    start_s = in_video * 2.0
    num_frames = rng.integers(5, 50, n).astype(np.int32)
    size = SIZES[g % len(SIZES)]
    blobs = rng.integers(0, 256, (n, blob_bytes), dtype=np.uint8)
    blobs[:, :8] = g.astype("<u8").view(np.uint8).reshape(n, 8)  # distinct bytes per clip
    offsets = pa.py_buffer(np.arange(0, (n + 1) * blob_bytes, blob_bytes, dtype=np.int64))
    videos = pa.Array.from_buffers(pa.large_binary(), n, [None, offsets, pa.py_buffer(blobs.tobytes())])
    columns = {
        "clip_id": pa.array(clip_ids(g)),
        "video_id": pa.array([f"syn{v:013d}" for v in (g // CLIPS_PER_VIDEO).tolist()]),
        "uri": pa.array([f"footage/syn{v:013d}.mp4" for v in (g // CLIPS_PER_VIDEO).tolist()]),
        "clip_index": in_video.astype(np.int32),
        "start_s": start_s,
        "end_s": start_s + num_frames / FPS,
        "start_frame": (start_s * FPS).astype(np.int64),
        "end_frame": (start_s * FPS).astype(np.int64) + num_frames,
        "num_frames": num_frames,
        "fps": np.full(n, FPS),
        "width": size[:, 0],
        "height": size[:, 1],
        "codec": pa.array(["h264"] * n),
        "size_bytes": np.full(n, blob_bytes, np.int64),
        "video": videos,
        "thumbnail": pa.repeat(pa.scalar(thumbnail, pa.binary()), n),
        "crop_box": pa.nulls(n),
    }
    return pa.table([pa.array(columns[f.name], f.type) for f in CLIPS_SCHEMA], schema=CLIPS_SCHEMA)


def _write_clips(store: Store, n_clips: int, clips_per_fragment: int, seed: int, blob_bytes: int) -> None:
    ds = store.create(CLIPS)
    thumbnail = _tiny_jpeg()
    # At most _FRAGMENTS_PER_WRITE fragment files per call: one call writing thousands of tiny files at
    # once sometimes took 3.5 GB (pylance 14.0.2), a hundred never more than ~250 MB.
    rows_per_write = min(_WRITE_ROWS, clips_per_fragment * _FRAGMENTS_PER_WRITE)
    # One commit at the end: each write_fragments call into an existing dataset loads its latest
    # manifest, so committing as we go made every later call decode all the fragments committed so far
    # (10^6 clips: 534 s, most of it in malloc; one commit: 137 s under a load average of 8). About 1 KB
    # of metadata per pending fragment.
    pending: list = []
    for start in range(0, n_clips, rows_per_write):
        rows = _split_rows(start, min(n_clips, start + rows_per_write), seed, blob_bytes, thumbnail)
        pending += write_fragments(
            rows,
            store.clips_uri,
            schema=CLIPS_SCHEMA,
            mode="append",
            max_rows_per_file=clips_per_fragment,
            data_storage_version="2.2",
        )
    if pending:
        lance.LanceDataset.commit(
            store.clips_uri, lance.LanceOperation.Append(pending), read_version=ds.version
        )


def _stage_batches(store: Store) -> Iterator[tuple[np.ndarray, pa.Array, pa.Array]]:
    """(clip positions, row ids, clip ids) per batch, in the order the clips were appended."""
    done = 0
    for batch in store.require(CLIPS).to_batches(
        columns=["clip_id"], with_row_id=True, batch_size=_STAGE_ROWS, strict_batch_size=True
    ):
        g = np.arange(done, done + batch.num_rows, dtype=np.int64)
        done += batch.num_rows
        yield g, batch[ROW_ID], batch["clip_id"]


def _scalar_scores(g: np.ndarray, seed: int) -> dict[str, pa.Array]:
    n = len(g)
    rng = np.random.default_rng([seed, 2, int(g[0])])
    text = rng.uniform(0.0, 0.3, n)
    text[rng.random(n) < 0.9] = 0.0  # most clips show no text
    return {
        "motion": pa.array(rng.lognormal(-5.5, 1.0, n)),
        "technical_quality": pa.array(rng.uniform(0.0, 1.0, n)),
        "aesthetic_mean": pa.array(rng.normal(5.0, 1.0, n)),
        "text_area": pa.array(text),
    }


def _embeddings(g: np.ndarray, seed: int, embed_dim: int) -> pa.Array:
    n = len(g)
    rng = np.random.default_rng([seed, 4, int(g[0])])
    embedding = rng.standard_normal((n, embed_dim), dtype=np.float32)
    first = np.flatnonzero(g % DUPLICATE_EVERY == DUPLICATE_EVERY - 2)
    first = first[first + 1 < n]
    noise = rng.standard_normal((len(first), embed_dim), dtype=np.float32)
    embedding[first + 1] = embedding[first] + 1e-3 * noise
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    return pa.FixedSizeListArray.from_arrays(pa.array(embedding.ravel()), embed_dim)


def _scores(g: np.ndarray, seed: int, embed_dim: int) -> dict[str, pa.Array]:
    return {
        "score_error": pa.nulls(len(g), pa.string()),
        "frames_sampled": pa.array(np.full(len(g), 8, np.int32)),
        **_scalar_scores(g, seed),
        "clip_embedding": _embeddings(g, seed, embed_dim),
        # the score stage's words for prompts (curate/describe.py), so train.data.prompt_template finds them
        "caption_camera": pa.array(np.asarray(CAMERA_WORDS, object)[g % len(CAMERA_WORDS)], pa.string()),
        "caption_motion": pa.array(np.where(g % 2 == 1, "the subject moves fast", None), pa.string()),
        "caption_text": pa.repeat(pa.scalar("no on-screen text"), len(g)),
    }


def _duplicate_of(g: np.ndarray) -> pa.Array:
    second = g % DUPLICATE_EVERY == DUPLICATE_EVERY - 1
    ids = np.full(len(g), None, dtype=object)
    ids[second] = clip_ids(g[second] - 1)
    return pa.array(ids, pa.string())


def _add_stages(store: Store, embed_dim: int, seed: int, stages: Sequence[str]) -> None:
    def stage(columns) -> Iterator[pa.Table]:
        for g, row_ids, ids in _stage_batches(store):
            yield pa.table({ROW_ID: row_ids, "clip_id": ids, **columns(g)})

    if "score" not in stages:
        return
    store.add_columns(
        stage(lambda g: _scores(g, seed, embed_dim)),
        stage="score",
        config={"source": "synthetic", "seed": seed},
        models={
            "motion": {"method": "synthetic", "placeholder": False},
            "aesthetic": {"placeholder": True, "columns": ["aesthetic_mean"]},
            "image_tower": {"placeholder": True, "columns": ["clip_embedding"], "embed_dim": embed_dim},
        },
    )
    if "dedup" not in stages:
        return
    store.add_columns(
        stage(lambda g: {"duplicate_of": _duplicate_of(g)}),
        stage="dedup",
        config={"signature": "clip_embedding"},
        models={"signature": "clip_embedding", "placeholder": False},
    )

    def selected(g: np.ndarray) -> dict[str, pa.Array]:
        table = pa.table({**_scalar_scores(g, seed), "duplicate_of": _duplicate_of(g)})
        return {"selected": selected_by(FILTER, table)}

    if "filter" not in stages:
        return
    store.add_columns(
        stage(selected),
        stage="filter",
        config={"expression": parse_filter(FILTER, "filter.expression").sql, "source_expression": FILTER},
    )

    def captions(g: np.ndarray) -> dict[str, pa.Array]:
        failed = np.random.default_rng([seed, 3, int(g[0])]).random(len(g)) < CAPTION_FAILURES
        text = np.array([f"synthetic clip {i} of video {i // CLIPS_PER_VIDEO}" for i in g.tolist()], object)
        text[failed] = None
        errors = np.where(failed, "synthetic caption failure", None)
        return {
            "caption": pa.array(text, pa.string()),
            "caption_model": pa.array(np.where(failed, None, "synthetic"), pa.string()),
            "caption_error": pa.array(errors, pa.string()),
        }

    if "caption" not in stages:
        return
    store.add_columns(
        stage(captions),
        stage="caption",
        config={"source": "synthetic"},
        models={"vlm": {"name": "synthetic", "placeholder": True}},
    )


def selected_by(expression: str, table: pa.Table) -> pa.Array:
    """Where `expression` holds over the rows of `table` (null counts as not selected), by DuckDB:
    a SQL engine independent of Lance, which the filter job uses."""
    condition = f"coalesce(({expression}), false)" if expression.strip() else "true"
    with duckdb.connect() as con:
        con.register("rows", table)
        result = con.sql(f"SELECT {condition} AS selected FROM rows").fetch_arrow_table()
    return result["selected"].combine_chunks()
