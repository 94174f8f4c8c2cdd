"""The `export` section of the pipeline config (`reelforge export`, pipelines/export.py): apart from the
exporter, so that reading a config does not import Lance and pandas (~0.35 s before any command could start)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Format = Literal["webdataset", "parquet", "folder"]


class ExportConfig(BaseModel):
    """The export command's settings: format, filter, shard and file sizes, layout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Format = "webdataset"
    # A Lance SQL filter over clips columns ("selected AND aesthetic_mean > 5"); empty exports every clip.
    filter: str = ""
    # A WebDataset shard is closed once it holds at least this many bytes (a clip is never split).
    shard_bytes: int = Field(default=256 << 20, ge=1)
    # Parquet: clip bytes in the file (`inline`) or beside it under videos/ with a relative path.
    parquet_video: Literal["inline", "path"] = "inline"
    # A parquet file is closed once it holds at least this many bytes, in row groups of this many clips.
    parquet_file_bytes: int = Field(default=512 << 20, ge=1)
    parquet_row_group_clips: int = Field(default=64, ge=1)
    # Folder: metadata.jsonl (file_name, text, metadata) or prompts.txt + videos.txt.
    folder_layout: Literal["metadata_jsonl", "prompts_txt"] = "metadata_jsonl"
    caption_column: str = "caption"
    # A clip without a caption is an error row (a text-to-video trainer needs its text); false exports
    # it with an empty caption.
    require_caption: bool = True
    # `decode`: every frame must decode and the count match the clip's num_frames; `open`: the
    # container opens and its first frame decodes (cheaper); `none`: bytes are copied unchecked.
    verify: Literal["decode", "open", "none"] = "decode"
    verify_threads: int = Field(default=2, ge=1)
    # Metadata rows read per scan batch, and clips whose bytes are held in memory at once.
    scan_rows: int = Field(default=4096, ge=1)
    blob_batch: int = Field(default=32, ge=1)
