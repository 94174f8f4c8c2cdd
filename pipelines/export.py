"""`reelforge export`: hand the curated clips to other trainers in the formats they read.

- `webdataset`: tar shards of about `export.shard_bytes`, each clip as `<key>.mp4` (the stored bytes),
  `<key>.json` (its metadata and scores) and `<key>.txt` (its caption); keys are zero-padded export
  positions, so they sort in export order and WebDataset groups a clip's files by them.
- `parquet`: `data/part-NNNNNN.parquet` files of metadata, caption and scores, with the clip bytes
  inline (`video`) or as a path relative to OUT (`video_path`, into `videos/`); the clips table's field
  metadata (placeholder marks) is kept in the parquet schema. `data/` holds only parquet files, so
  readers take the folder as one dataset.
- `folder`: `videos/<key>.mp4` plus `metadata.jsonl` (`file_name`, `text` and the metadata: the Hugging
  Face videofolder layout) or `prompts.txt` + `videos.txt` (one line per clip, the diffusers and
  finetrainers layout).

The clips are read at one pinned clips version in batches of `export.scan_rows` row ids and metadata
columns, their bytes `export.blob_batch` at a time, so memory does not grow with the table. Every
finished unit (a shard, a parquet file, a batch of the folder layout) is committed to
`_reelforge_export.json` with the number of clips consumed; a run killed anywhere resumes from the last
commit (`--resume`): partial files are removed, appended text files cut back to their committed size,
and the scan skips what was done. A clip whose bytes are missing or do not decode (`export.verify`) gets
a line in `_errors.jsonl` with its reason instead, and the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.export_config import ExportConfig
from pipelines.export_formats import PARTIAL, WRITERS, AppendLog, Clip
from store import CLIPS, ROW_ID, ClipReader, Store
from store.placeholders import placeholder_columns

# Leading underscores: pyarrow's and Hugging Face's directory readers skip these files.
MANIFEST = "_reelforge_export.json"
ERRORS = "_errors.jsonl"
# Columns left out of the metadata: the clip itself, its thumbnail, and model inputs that are large
# binary or vector values no other trainer reads (latents of our autoencoder, our text encoder's states).
NOT_EXPORTED = frozenset(
    {
        "video",
        "thumbnail",
        "latent",
        "latent_shape",
        "text_emb",
        "text_shape",
        "frame_signature",
        "clip_embedding",
    }
)
# Settings a resumed export must share with the run it continues (the output would mix otherwise).
_RESUME_KEYS = (
    "format",
    "filter",
    "shard_bytes",
    "parquet_video",
    "parquet_file_bytes",
    "parquet_row_group_clips",
    "folder_layout",
    "caption_column",
    "require_caption",
    "verify",
)


class ExportError(RuntimeError):
    """An export that cannot start as asked (occupied output folder, settings differ from the run being
    resumed, no such column): one line naming what to do."""


@dataclass
class ExportSummary:
    """Counts of one export run, printed at its end."""

    out: Path
    format: str
    exported: int = 0
    failed: int = 0
    skipped: int = 0  # done by the run this one resumed
    reasons: dict[str, int] = field(default_factory=dict)
    files: int = 0

    @property
    def attempted(self) -> int:
        """Clips this run tried to export, failed ones included."""
        return self.exported + self.failed

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
        out = [
            f"export: {self.exported} clips as {self.format} in {self.out} ({self.files} files)"
            + (f", {self.skipped} done before this run" if self.skipped else "")
        ]
        if self.failed:
            out.append(f"  {self.failed} clips failed (see {ERRORS}):")
            out += [f"    {n} x {reason}" for reason, n in sorted(self.reasons.items(), key=lambda x: -x[1])]
        return out


# ---- the output folder ------------------------------------------------------------------------------
def prepare_out(out: Path, cfg: ExportConfig, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check the output folder before any work: the manifest of the run to resume (or None for a new
    export). Refuses a folder holding another export unless resume/overwrite, and any other non-empty
    folder (its files are not ours to replace)."""
    if resume and overwrite:
        raise ExportError("give --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file: give a folder to export into")
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if overwrite:
            shutil.rmtree(out)
            return None
        if not resume:
            state = "complete" if manifest.get("complete") else "incomplete"
            raise ExportError(
                f"{out} holds another export ({manifest['settings']['format']}, {state}, "
                f"{manifest['progress']['rows_done']} clips): --resume continues it, --overwrite replaces it"
            )
        differ = [
            f"{k}={manifest['settings'].get(k)!r} (now {getattr(cfg, k)!r})"
            for k in _RESUME_KEYS
            if manifest["settings"].get(k) != getattr(cfg, k)
        ]
        if differ:
            raise ExportError(
                f"{out} was exported with other settings: {', '.join(differ)}; resume with those "
                "(--set export.KEY=VALUE) or --overwrite"
            )
        return manifest
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(
            f"{out} is not empty and holds no reelforge export: export into a new or empty folder"
        )
    if resume:
        raise ExportError(f"{out} holds no export to resume: leave out --resume")
    return None


def _save_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    tmp = out / (MANIFEST + PARTIAL)
    tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    os.replace(tmp, out / MANIFEST)


# ---- checking a clip -------------------------------------------------------------------------------
def clip_problem(data: bytes, num_frames: int | None, verify: str) -> str | None:  # noqa: PLR0911 — one early return per way a clip's bytes are unusable
    """Why a clip's bytes are unusable, or None: `verify` "open" decodes the first frame, "decode"
    every frame (and compares their number with the row's), "none" checks only that bytes are there."""
    if not data:
        return "no clip bytes (the video blob is empty or missing)"
    if verify == "none":
        return None
    from media import MediaError, decode_check  # PyAV: imported by the export tasks only

    try:
        seen = decode_check(data, limit=1 if verify == "open" else None)
    except MediaError as err:
        return f"does not decode: {err}"
    error = seen.demux_error or seen.first_bad_packet_error
    if error:
        return f"does not decode: {error} ({seen.frames} frames decoded)"
    if seen.frames == 0:
        return "no frame decodes"
    if verify == "decode" and num_frames and seen.frames < num_frames:
        return f"truncated: {seen.frames} of {num_frames} frames decode"
    return None


# ---- the run -----------------------------------------------------------------------------------------
def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def export(  # noqa: PLR0915 — the export read top to bottom: check, write, manifest
    store: Store,
    out: Path,
    cfg: ExportConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_clip: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Export the clips matching `cfg.filter` into `out` (see the module docstring). `on_clip(n)` is
    called after each clip with the number done in this run (progress)."""
    latest = store.require(CLIPS)
    problem = filter_problem(latest, cfg.filter)  # checked before the output folder is touched
    if problem:
        raise ExportError(f"export.filter {cfg.filter!r} does not apply to clips: {problem}")
    if cfg.caption_column not in latest.schema.names and cfg.require_caption:
        raise ExportError(
            f"clips has no {cfg.caption_column!r} column: run `reelforge caption`, or set "
            "export.require_caption=false to export without captions"
        )
    manifest = prepare_out(out, cfg, resume=resume, overwrite=overwrite)
    summary = ExportSummary(out, cfg.format)
    if manifest is not None and manifest.get("complete"):
        summary.skipped = manifest["progress"]["rows_done"]
        summary.files = manifest["progress"].get("files", 0)
        return summary
    version = manifest["clips_version"] if manifest else latest.version
    try:
        ds = store.require(CLIPS, version)
    except (ValueError, OSError) as err:
        raise ExportError(
            f"clips version {version} that this export started from is gone ({err}): --overwrite starts over"
        ) from None
    columns = [n for n in ds.schema.names if n not in NOT_EXPORTED]
    out.mkdir(parents=True, exist_ok=True)
    schema = _parquet_schema(ds.schema, columns, cfg)
    marks = placeholder_columns(store.stage_records())
    manifest = manifest or {
        "settings": cfg.model_dump(mode="json"),
        "clips_version": version,
        "store": str(store.root),
        "columns": columns,
        "placeholder_columns": {c: m for c, m in marks.items() if c in columns},
        "progress": {"rows_done": 0, "exported": 0, "failed": 0, "errors_bytes": 0, "units": 0},
        "complete": False,
    }
    _save_manifest(out, manifest)  # before any output: a run killed now is still resumable
    progress = dict(manifest["progress"])
    summary.skipped = done = progress["rows_done"]
    writer = WRITERS[cfg.format](out, cfg, progress, schema)
    errors = AppendLog(out / ERRORS, progress["errors_bytes"])
    reader = ClipReader.of(ds)
    position = done

    def commit() -> None:
        progress.update(writer.commit())
        progress.update(
            rows_done=position,
            exported=progress["exported"] + summary.exported - committed[0],
            failed=progress["failed"] + summary.failed - committed[1],
            errors_bytes=errors.commit(),
        )
        progress["files"] = writer.files(progress["exported"]) + (1 if progress["failed"] else 0)
        committed[:] = [summary.exported, summary.failed]
        manifest["progress"] = progress
        _save_manifest(out, manifest)

    committed = [0, 0]
    try:
        with ThreadPoolExecutor(cfg.verify_threads) as pool:
            for rows in _batches(ds, columns, cfg, skip=done):
                row_ids = rows.column(ROW_ID).to_pylist()
                blobs = reader.blobs(row_ids)
                records = rows.drop_columns([ROW_ID]).to_pylist()
                problems = pool.map(
                    lambda b, r: clip_problem(b, r.get("num_frames"), cfg.verify), blobs, records
                )
                for record, data, problem in zip(records, blobs, problems, strict=True):
                    key = f"{position:09d}"
                    caption = record.get(cfg.caption_column)
                    if problem is None and cfg.require_caption and not caption:
                        problem = f"no caption (column {cfg.caption_column} is empty)"
                    if problem is None:
                        metadata = {k: _json_value(v) for k, v in record.items() if k != cfg.caption_column}
                        writer.add(Clip(key, metadata, caption or "", data))
                        summary.exported += 1
                    else:
                        errors.write(json.dumps({"key": key, "clip_id": record["clip_id"], "error": problem}))
                        summary.failed += 1
                        summary.reasons[problem] = summary.reasons.get(problem, 0) + 1
                    position += 1
                    if writer.full():
                        commit()
                    if on_clip is not None:
                        on_clip(position - done)
        commit()
        manifest["complete"] = True
        _save_manifest(out, manifest)
    finally:
        writer.close()
        errors.close()
    summary.files = progress["files"]
    return summary


def filter_problem(ds: Any, where: str) -> str | None:
    """Why a Lance SQL filter does not apply to the dataset (a syntax error, an unknown column), or
    None: the scan is planned, not run."""
    if not where:
        return None
    try:
        ds.scanner(columns=[], with_row_id=True, filter=where, limit=0).explain_plan()
    except (ValueError, OSError) as err:
        return str(err).split(", /")[0].removeprefix("Invalid user input: ")
    return None


def _batches(ds: Any, columns: list[str], cfg: ExportConfig, skip: int) -> Iterator[pa.Table]:
    """The metadata rows to export in order, `blob_batch` at a time, after the first `skip`."""
    scan = ds.to_batches(
        columns=columns, filter=cfg.filter or None, with_row_id=True, batch_size=cfg.scan_rows
    )
    for batch in scan:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        table = pa.Table.from_batches([batch.slice(skip)])
        skip = 0
        for start in range(0, table.num_rows, cfg.blob_batch):
            yield table.slice(start, cfg.blob_batch)


def _parquet_schema(clips: pa.Schema, columns: list[str], cfg: ExportConfig) -> pa.Schema:
    """key, the metadata columns typed (and marked) as in clips, caption, and the clip or its path."""
    fields = [pa.field("key", pa.string(), nullable=False)]
    fields += [clips.field(n) for n in columns if n != cfg.caption_column]
    fields.append(pa.field("caption", pa.string()))
    if cfg.caption_column in clips.names and clips.field(cfg.caption_column).metadata:
        fields[-1] = fields[-1].with_metadata(clips.field(cfg.caption_column).metadata)
    fields.append(
        pa.field("video", pa.binary())
        if cfg.parquet_video == "inline"
        else pa.field("video_path", pa.string())
    )
    return pa.schema(fields)
