"""Every column of every table, declared once: its Arrow type, nullability, the stage that writes it
and what it means. `store.contract` builds the tables, the stages' schemas and the checks from these.

Nothing here imports Ray: curate/, caption/, train/ and pipelines/ may all import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# Bumped when a column changes meaning; a dataset written with another version is refused with a
# one-line error instead of being silently mixed.
SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = "reelforge.schema_version"

VIDEOS, CLIPS, EVALS = "videos", "clips", "evals"

# On Lance file format 2.2 a large_binary field with this marker becomes a blob v2 column: scans return
# descriptors, bytes come from `read_blobs`, and adding columns never rewrites it.
BLOB_MARKER = {"lance-encoding:blob": "true"}

BOUNDARY_TYPE = pa.struct(
    [
        pa.field("seconds", pa.float64()),  # presentation time of the first frame of the new shot
        pa.field("frame", pa.int64()),  # its index in decoding order
        pa.field("kind", pa.string()),  # "cut" | "gradual"
    ]
)

BOX_TYPE = pa.struct([pa.field(k, pa.int32()) for k in ("x", "y", "w", "h")])

# Sentinel for a fixed-size list whose width is set by the model that writes it (an embedding).
MODEL_WIDTH = -1


class ContractError(ValueError):
    """A stage wrote a column it did not declare, or with another type."""


@dataclass(frozen=True)
class Column:
    """One column: its Arrow type, who writes it and what it means."""

    name: str
    type: pa.DataType
    stage: str  # the stage that writes it
    doc: str
    nullable: bool = True
    blob: bool = False  # stored as a Lance blob (scans return descriptors; bytes via read_blobs)
    width: int | None = None  # fixed-size list width; MODEL_WIDTH = set by the writing model

    def field(self, width: int | None = None) -> pa.Field:
        """The Arrow field; `width` fills a MODEL_WIDTH list (e.g. the image tower's embedding size)."""
        typ = self.type
        if self.width is not None:
            size = width if self.width == MODEL_WIDTH else self.width
            if size is None or size <= 0:
                raise ContractError(f"column {self.name} needs its list width (the model's output size)")
            typ = pa.list_(self.type, size)
        return pa.field(self.name, typ, nullable=self.nullable, metadata=BLOB_MARKER if self.blob else None)

    def accepts(self, field: pa.Field) -> bool:
        """Does a written field match this declaration (any width for MODEL_WIDTH lists)?"""
        if self.width == MODEL_WIDTH:
            return bool(pa.types.is_fixed_size_list(field.type) and field.type.value_type == self.type)
        if self.blob:
            return bool(pa.types.is_large_binary(field.type) or "blob" in str(field.type))
        return bool(field.type == self.field().type)

    @property
    def type_name(self) -> str:
        """The column's type as the contract's table prints it."""
        if self.width == MODEL_WIDTH:
            return f"{self.type}[model width]"
        if self.width is not None:
            return f"{self.type}[{self.width}]"
        return "blob" if self.blob else str(self.type)


def _c(name: str, typ: pa.DataType, stage: str, doc: str, **kw: object) -> Column:
    return Column(name, typ, stage, doc, **kw)  # type: ignore[arg-type]


f64, f32, i32, i64, s, b = pa.float64(), pa.float32(), pa.int32(), pa.int64(), pa.string(), pa.bool_()

VIDEO_COLUMNS: tuple[Column, ...] = (
    _c("video_id", s, "split", "content hash of the file's bytes", nullable=False),
    _c("uri", s, "split", "where the file was read from"),
    _c("size_bytes", i64, "split", "file size"),
    _c("container", s, "split", "container format as libav names it"),
    _c("codec", s, "split", "video codec"),
    _c("width", i32, "split", "coded width in pixels"),
    _c("height", i32, "split", "coded height in pixels"),
    _c("rotation", i32, "split", "display rotation: clockwise degrees a player turns the picture"),
    _c("nominal_fps", f64, "split", "frame rate the stream declares"),
    _c("avg_fps", f64, "split", "frames / duration, from the timestamps"),
    _c("is_vfr", b, "split", "variable frame rate (timestamps not evenly spaced)"),
    _c("duration_s", f64, "split", "duration from the container timestamps"),
    _c("num_frames", i64, "split", "frames decoded"),
    _c("has_audio", b, "split", "the file has an audio stream"),
    _c("boundaries", pa.list_(BOUNDARY_TYPE), "split", "detected shot boundaries (seconds, frame, kind)"),
    _c("num_clips", i32, "split", "clips written from this file"),
    _c("status", s, "split", "`ok` or `error`"),
    _c("error", s, "split", "the specific reason when status is error (or a partial decode)"),
    _c("pipeline_version", s, "split", "reelforge version that processed the file"),
    _c("processed_at", pa.timestamp("us", tz="UTC"), "split", "when the file was processed"),
)

_SCORE = "score"
CLIP_COLUMNS: tuple[Column, ...] = (
    # ---- split: the clip itself ------------------------------------------------------------------
    _c("clip_id", s, "split", "video_id + start timestamp: deterministic", nullable=False),
    _c("video_id", s, "split", "the source file's video_id", nullable=False),
    _c("uri", s, "split", "the source file"),
    _c("clip_index", i32, "split", "position of the clip in its source"),
    _c("start_s", f64, "split", "start, container timestamp of the source in seconds"),
    _c("end_s", f64, "split", "end, container timestamp of the source in seconds"),
    _c("start_frame", i64, "split", "first frame, decoding-order index in the source"),
    _c("end_frame", i64, "split", "end frame (exclusive), decoding-order index in the source"),
    _c("num_frames", i32, "split", "frames in the encoded clip"),
    _c("fps", f64, "split", "frame rate of the clip"),
    _c("width", i32, "split", "width of the encoded clip"),
    _c("height", i32, "split", "height of the encoded clip"),
    _c("codec", s, "split", "codec of the encoded clip"),
    _c("size_bytes", i64, "split", "bytes of the encoded clip"),
    _c("video", pa.large_binary(), "split", "the encoded clip (H.264 MP4)", blob=True),
    _c("thumbnail", pa.binary(), "split", "JPEG of the middle frame"),
    _c(
        "crop_box",
        BOX_TYPE,
        "split",
        "the source's picture the clip was cut to (split.extract.crop_borders): x, y, w, h in source "
        "pixels before rotation; null when the source has no constant borders or cropping is off",
    ),
    # ---- score: decode-side measures -------------------------------------------------------------
    _c("score_error", s, _SCORE, "why the clip could not be scored (null when scored)"),
    _c("frames_sampled", i32, _SCORE, "frames the scorers looked at"),
    _c("content_hash", s, _SCORE, "hash of the decoded sampled frames (exact duplicates)"),
    _c("motion", f64, _SCORE, "mean optical-flow magnitude per frame, fraction of the frame diagonal"),
    _c("motion_max", f64, _SCORE, "largest per-pair mean flow magnitude, same unit"),
    _c("is_still", b, _SCORE, "no frame pair moves above the configured still threshold"),
    _c(
        "camera_shake",
        f64,
        _SCORE,
        "mean change of the global (median) flow vector between pairs: ~0 for a steady pan",
    ),
    _c(
        "camera_motion",
        s,
        _SCORE,
        "static, pan_left, pan_right, tilt_up, tilt_down, zoom_in, zoom_out, shaky or complex, from a "
        "similarity fitted to each pair's flow (reweighted least squares); pan_left = the camera turns left (content moves "
        "right), tilt_up = content moves down, zoom_in = content grows",
    ),
    _c(
        "camera_speed",
        f64,
        _SCORE,
        "mean displacement of the picture under the camera model, frame fractions per second (x over "
        "the width, y over the height)",
    ),
    _c(
        "camera_motion_confidence",
        f64,
        _SCORE,
        "0-1: share of frame pairs with the clip's label times the share of the flow the model explains",
    ),
    _c(
        "object_motion",
        f64,
        _SCORE,
        "flow left after removing the camera model (above the noise floor), frame fractions per second",
    ),
    _c(
        "camera_error",
        s,
        _SCORE,
        "why the camera columns are null (too short, too dark or flat for flow); null when measured",
    ),
    _c(
        "content_box",
        BOX_TYPE,
        _SCORE,
        "the picture inside constant flat borders (letterbox, pillarbox, windowbox): x, y, w, h in pixels "
        "of the stored clip; the whole frame when it has none",
    ),
    _c("border_fraction", f64, _SCORE, "share of the frame's area outside content_box"),
    _c("sharpness", f64, _SCORE, "variance of the Laplacian of luma (0-255 scale)"),
    _c("luma_mean", f64, _SCORE, "mean luma, 0-1"),
    _c("clipped_black", f64, _SCORE, "fraction of pixels at or under the black level"),
    _c("clipped_white", f64, _SCORE, "fraction of pixels at or over the white level"),
    _c("contrast", f64, _SCORE, "RMS contrast: std of luma, 0-1"),
    _c("colorfulness", f64, _SCORE, "Hasler & Suesstrunk (2003) colourfulness M"),
    _c(
        "blockiness",
        f64,
        _SCORE,
        "luma step across 8-px block borders over the step elsewhere; 1 = no blocking",
    ),
    _c("too_dark", b, _SCORE, "exposure below the configured floor"),
    _c("too_bright", b, _SCORE, "exposure above the configured ceiling"),
    _c("technical_quality", f64, _SCORE, "0-1 summary: sharpness, blocking and exposure terms multiplied"),
    _c("frame_signature", f32, _SCORE, "model-free near-duplicate signature (4 x 16x16 grey)", width=1024),
    _c(
        "clip_embedding",
        f32,
        _SCORE,
        "image-tower embedding: L2-normalised mean over the sampled frames",
        width=MODEL_WIDTH,
    ),
    _c("aesthetic_mean", f64, _SCORE, "aesthetic head score, mean over frames"),
    _c("aesthetic_min", f64, _SCORE, "aesthetic head score, worst frame"),
    _c("text_area", f64, _SCORE, "OCR text box area, fraction of the frame (mean)"),
    _c("text_area_max", f64, _SCORE, "OCR text box area, fraction of the frame (largest)"),
    _c(
        "overlay_text_area",
        f64,
        _SCORE,
        "OCR text boxes that stay put while the picture changes (logos, watermarks, subtitles, tickers), "
        "fraction of the frame; scene text moving with the camera is not counted",
    ),
    _c("subtitle_band", b, _SCORE, "overlay text centred in the bottom band of the frame"),
    _c("corner_logo", b, _SCORE, "a small overlay text box in a corner (logo, watermark)"),
    _c(
        "caption_camera", s, _SCORE, 'camera_motion and camera_speed in words ("the camera pans left slowly")'
    ),
    _c("caption_motion", s, _SCORE, 'object_motion in words ("the subject moves fast")'),
    _c("caption_text", s, _SCORE, 'on-screen text in words ("burned-in subtitles", "no on-screen text")'),
    # ---- dedup, filter ----------------------------------------------------------------------------
    _c("duplicate_of", s, "dedup", "clip_id of the original this clip duplicates, null for originals"),
    _c("selected", b, "filter", "the filter expression holds and the clip was scored"),
    # ---- caption ------------------------------------------------------------------------------------
    _c("caption", s, "caption", "the VLM's caption"),
    _c("caption_model", s, "caption", "model that wrote it"),
    _c("caption_prompt_version", s, "caption", "prompt template version"),
    _c("caption_params", s, "caption", "sampling parameters (JSON)"),
    _c("caption_prompt_tokens", i32, "caption", "prompt tokens"),
    _c("caption_output_tokens", i32, "caption", "generated tokens"),
    _c("caption_latency_s", f32, "caption", "seconds from request to answer"),
    _c("caption_error", s, "caption", "why no caption was made (null when captioned)"),
    # ---- encode ---------------------------------------------------------------------------------------
    _c("latent", pa.large_binary(), "encode", "VAE latent, float32 C-order, shape in latent_shape"),
    _c("latent_shape", pa.list_(i32), "encode", "latent shape (C, T, H, W)"),
    _c("latent_bucket", s, "encode", "training bucket HxWxF the clip was cut to"),
    _c("text_emb", pa.large_binary(), "encode", "caption token states, float32 (L, E)"),
    _c("text_shape", pa.list_(i32), "encode", "text_emb shape (L, E)"),
    _c("text_len", i32, "encode", "real tokens in text_emb; the rest is padding"),
    _c("encode_error", s, "encode", "why the clip was not encoded (null when encoded)"),
)

# `reelforge eval` (curate/vbench.py, pipelines/jobs/eval.py): one row per evaluated video and run. The
# seven dimensions are VBench's, higher is better; curate/vbench.py documents how each is measured.
_EVAL = "eval"
EVAL_COLUMNS: tuple[Column, ...] = (
    _c("run_id", s, _EVAL, "one `reelforge eval` run (UTC start time)", nullable=False),
    _c(
        "video",
        s,
        _EVAL,
        "what was evaluated: a file's path, or clip:<clip_id> for a curated clip",
        nullable=False,
    ),
    _c("source", s, _EVAL, "`files`, `samples` (with a sample record), `checkpoint`, `store` or `training`"),
    _c("prompt", s, _EVAL, "prompt the video was generated from (sample record), or the clip's caption"),
    _c("checkpoint", s, _EVAL, "checkpoint folder that generated the video"),
    _c("checkpoint_step", i64, _EVAL, "training step of that checkpoint"),
    _c("frames", i32, _EVAL, "frames evaluated"),
    _c("temporal_flickering", f64, _EVAL, "(255 - mean abs. difference of consecutive frames) / 255"),
    _c(
        "subject_consistency",
        f64,
        _EVAL,
        "cosine of centre-crop image-tower features with the first and previous frame",
    ),
    _c("background_consistency", f64, _EVAL, "the same on whole-frame (letterboxed) image-tower features"),
    _c("motion_smoothness", f64, _EVAL, "(255 - MAE of flow-interpolated odd frames) / 255"),
    _c("dynamic_degree", f64, _EVAL, "1 when VBench's optical-flow rule calls the video dynamic, else 0"),
    _c("aesthetic_quality", f64, _EVAL, "aesthetic head / 10, mean over frames"),
    _c("imaging_quality", f64, _EVAL, "technical quality x a noise term, 0-1"),
    _c(
        "tower_embedding",
        f32,
        _EVAL,
        "image-tower features: L2-normalised mean over the frames (Frechet distances)",
        width=MODEL_WIDTH,
    ),
    _c("models", s, _EVAL, "the models behind the values (JSON)"),
    _c(
        "placeholders",
        s,
        _EVAL,
        "values from random-weight models: {column: stage/model} (JSON), null if none",
    ),
    _c("error", s, _EVAL, "why the video could not be evaluated (null when evaluated)"),
    _c("evaluated_at", pa.timestamp("us", tz="UTC"), _EVAL, "when the video was evaluated"),
)
