"""The writers of `reelforge export` (pipelines/export.py), one per format, and the append-only text
logs whose committed size the export's manifest records.

A writer adds clips to its current unit (a tar shard, a parquet file, a batch of the folder layout);
`full()` says when the unit is done and `commit()` closes it (renaming its `.partial` file into place)
and returns its part of the manifest's progress. A new writer removes the `.partial` files a killed run
left, so a resumed export writes each unit again from its start.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pipelines.export_config import ExportConfig

PARTIAL = ".partial"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + PARTIAL)
    tmp.write_bytes(data)
    os.replace(tmp, path)


class AppendLog:
    """A text file appended line by line whose committed size is recorded: a resume cuts it back."""

    def __init__(self, path: Path, committed: int | None) -> None:
        self.path = path
        if committed is not None and path.exists():
            with path.open("r+b") as f:
                f.truncate(committed)
        self._file = path.open("ab")

    def write(self, line: str) -> None:
        """Append one line (newlines in it made spaces)."""
        self._file.write(line.replace("\n", " ").encode() + b"\n")

    def commit(self) -> int:
        """Flush the log to disk; returns its size in bytes (the resume point)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        """Close the log."""
        self._file.close()


# ---- writers: one per format -------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    """One clip to export: its key, metadata, caption and MP4 bytes."""

    key: str
    metadata: dict[str, Any]  # JSON-able
    caption: str
    data: bytes


class _Writer:
    """Adds clips to the current unit; `full()` says when to commit it; `commit()` closes it and returns
    its part of the manifest's progress."""

    def __init__(self, out: Path, cfg: ExportConfig, progress: Mapping[str, Any], schema: pa.Schema) -> None:
        self.out, self.cfg, self.schema, self.progress = out, cfg, schema, progress
        self.units = int(progress.get("units", 0))
        for partial in out.rglob("*" + PARTIAL):
            partial.unlink()

    def add(self, clip: Clip) -> None:
        raise NotImplementedError

    def full(self) -> bool:
        raise NotImplementedError

    def commit(self) -> dict[str, Any]:
        raise NotImplementedError

    def files(self, exported: int) -> int:
        """Files of the committed output, besides the manifest and errors.jsonl."""
        return self.units

    def close(self) -> None:
        return None


class WebDatasetWriter(_Writer):
    """Writes WebDataset tar shards, each renamed into place when closed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._tar: tarfile.TarFile | None = None
        self._path: Path | None = None

    def add(self, clip: Clip) -> None:
        """Add the clip's MP4, caption and metadata to the open shard."""
        if self._tar is None:
            self._path = self.out / f"shard-{self.units:06d}.tar"
            self._tar = tarfile.open(  # noqa: SIM115  (open across add() calls, closed in commit())
                self._path.with_name(self._path.name + PARTIAL), "w", format=tarfile.USTAR_FORMAT
            )
        meta = json.dumps({**clip.metadata, "caption": clip.caption}, sort_keys=True).encode()
        for ext, payload in (("mp4", clip.data), ("json", meta), ("txt", clip.caption.encode())):
            # Fixed owner, mode and time: the same clips make byte-identical shards.
            info = tarfile.TarInfo(f"{clip.key}.{ext}")
            info.size, info.mode, info.mtime = len(payload), 0o444, 0
            self._tar.addfile(info, io.BytesIO(payload))

    def full(self) -> bool:
        """Is the open shard at its size limit?"""
        return self._tar is not None and self._tar.offset >= self.cfg.shard_bytes

    def commit(self) -> dict[str, Any]:
        """Close the open shard and move it into place; returns the resume state."""
        if self._tar is not None and self._path is not None:
            self._tar.close()
            os.replace(self._path.with_name(self._path.name + PARTIAL), self._path)
            self._tar, self.units = None, self.units + 1
        return {"units": self.units}


class ParquetWriter(_Writer):
    """Writes parquet files, videos inline or as files beside them."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        (self.out / "data").mkdir(parents=True, exist_ok=True)
        if self.cfg.parquet_video == "path":
            (self.out / "videos").mkdir(parents=True, exist_ok=True)

    def add(self, clip: Clip) -> None:
        """Add the clip's row (and its video file when videos are paths)."""
        row = {**clip.metadata, "key": clip.key, "caption": clip.caption}
        if self.cfg.parquet_video == "inline":
            row["video"] = clip.data
        else:
            row["video_path"] = f"videos/{clip.key}.mp4"
            _write_atomic(self.out / row["video_path"], clip.data)
        self._rows.append(row)
        self._bytes += len(clip.data)
        if len(self._rows) >= self.cfg.parquet_row_group_clips:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._path = self.out / "data" / f"part-{self.units:06d}.parquet"
            self._writer = pq.ParquetWriter(self._path.with_name(self._path.name + PARTIAL), self.schema)
        self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
        self._rows = []

    def full(self) -> bool:
        """Is the open parquet file at its size limit?"""
        return self._bytes >= self.cfg.parquet_file_bytes

    def files(self, exported: int) -> int:
        """Files written for `exported` clips."""
        return self.units + (exported if self.cfg.parquet_video == "path" else 0)

    def commit(self) -> dict[str, Any]:
        """Close the open parquet file and move it into place; returns the resume state."""
        self._flush()
        if self._writer is not None and self._path is not None:
            self._writer.close()
            os.replace(self._path.with_name(self._path.name + PARTIAL), self._path)
            self._writer, self._bytes, self.units = None, 0, self.units + 1
        return {"units": self.units}


class FolderWriter(_Writer):
    """videos/<key>.mp4 written at once; the text files are appended and committed every batch."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        (self.out / "videos").mkdir(parents=True, exist_ok=True)
        sizes = self.progress.get("text_bytes", {})
        names = (
            ("metadata.jsonl",)
            if self.cfg.folder_layout == "metadata_jsonl"
            else ("prompts.txt", "videos.txt")
        )
        self.logs = {n: AppendLog(self.out / n, sizes.get(n, 0)) for n in names}
        self._pending = 0

    def add(self, clip: Clip) -> None:
        """Write the clip's video file and its line in the text files."""
        file_name = f"videos/{clip.key}.mp4"
        _write_atomic(self.out / file_name, clip.data)
        if self.cfg.folder_layout == "metadata_jsonl":
            record = {"file_name": file_name, "text": clip.caption, **clip.metadata}
            self.logs["metadata.jsonl"].write(json.dumps(record, sort_keys=True))
        else:
            self.logs["prompts.txt"].write(clip.caption)
            self.logs["videos.txt"].write(file_name)
        self._pending += 1

    def full(self) -> bool:
        """Have enough clips been written since the last commit?"""
        return self._pending >= self.cfg.blob_batch

    def files(self, exported: int) -> int:
        """Files written for `exported` clips."""
        return exported + len(self.logs)

    def commit(self) -> dict[str, Any]:
        """Flush the text files; returns their sizes (the resume state)."""
        self._pending = 0
        return {"text_bytes": {n: log.commit() for n, log in self.logs.items()}}

    def close(self) -> None:
        """Close the text files."""
        for log in self.logs.values():
            log.close()


WRITERS: dict[str, type[_Writer]] = {
    "webdataset": WebDatasetWriter,
    "parquet": ParquetWriter,
    "folder": FolderWriter,
}
