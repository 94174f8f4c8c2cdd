"""Frozen, validated config of the split stage: probing, scene detection, clip rules, extraction.

pipelines/config.py composes it with the other stages' configs into one pipeline config read from YAML.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curate.config import Frozen

DetectorName = Literal["content", "adaptive", "threshold", "hash", "histogram"]


class ProbeConfig(Frozen):
    """How input files are probed before splitting."""

    # Relative spread of frame durations (from container timestamps) above which a file is VFR.
    vfr_tolerance: float = Field(default=0.05, gt=0.0)
    # Frames decoded by the probe to measure frame durations and read the display matrix.
    sample_frames: int = Field(default=120, ge=2)
    # A header claiming more pixels than this is refused before any frame buffer is allocated.
    max_pixels: int = Field(default=8192 * 8192, ge=1)
    # Bytes read per step while hashing the file into its video_id.
    hash_chunk_bytes: int = Field(default=4 << 20, ge=4096)


class ContentParams(Frozen):
    """PySceneDetect's ContentDetector settings."""

    threshold: float = Field(default=27.0, gt=0.0)
    luma_only: bool = False


class AdaptiveParams(Frozen):
    """PySceneDetect's AdaptiveDetector settings."""

    adaptive_threshold: float = Field(default=3.0, gt=0.0)
    window_width: int = Field(default=2, ge=1)
    min_content_val: float = Field(default=15.0, ge=0.0)
    luma_only: bool = False


class ThresholdParams(Frozen):
    """PySceneDetect's ThresholdDetector settings (fades)."""

    # Mean 8-bit intensity below (floor) or above (ceiling) which a frame counts as faded out.
    threshold: float = Field(default=12.0, ge=0.0, le=255.0)
    fade_bias: float = Field(default=0.0, ge=-1.0, le=1.0)
    method: Literal["floor", "ceiling"] = "floor"


class HashParams(Frozen):
    """PySceneDetect's HashDetector settings."""

    threshold: float = Field(default=0.35, gt=0.0, le=1.0)
    size: int = Field(default=8, ge=2)
    lowpass: int = Field(default=2, ge=1)


class HistogramParams(Frozen):
    """PySceneDetect's HistogramDetector settings."""

    threshold: float = Field(default=0.2, gt=0.0, le=1.0)
    bins: int = Field(default=128, ge=2, le=256)


class DetectConfig(Frozen):
    """How shot boundaries are found: a scene detector, or fixed windows."""

    # "scenes": run `detector`; "stride": no detection, fixed windows (very long single-shot footage).
    mode: Literal["scenes", "stride"] = "scenes"
    detector: DetectorName = "content"
    content: ContentParams = ContentParams()
    adaptive: AdaptiveParams = AdaptiveParams()
    threshold: ThresholdParams = ThresholdParams()
    hash: HashParams = HashParams()
    histogram: HistogramParams = HistogramParams()
    # Minimum shot length in frames (decoding order), as PySceneDetect's detectors count it.
    min_scene_frames: int = Field(default=15, ge=0)
    # Also run the fade (threshold) detector in the same pass and record its boundaries as "gradual".
    detect_fades: bool = True
    # Detection frames are subsampled by an integer step to about this width (160 keeps every test
    # cut and no false one, at ~2.5x less detector work than 256); 0 keeps full size.
    downscale_width: int = Field(default=160, ge=0)
    # Decoder threads of the split's passes over a file: None = one per CPU of the split task
    # (split.num_cpus, at least 1), so a task uses the CPUs Ray gave it and no more; 0 = libavcodec's
    # own count (a thread per core of the machine, plus one: every task on a busy node then competes
    # for all its cores, and frame threading cost 20-40% more CPU per frame here).
    decode_threads: int | None = Field(default=None, ge=0)
    # Window length of the stride mode.
    stride_s: float = Field(default=10.0, gt=0.0)


class ClipRules(Frozen):
    """How shots become clips: lengths, trimming around boundaries, long shots."""

    min_length_s: float = Field(default=1.0, ge=0.0)
    max_length_s: float = Field(default=10.0, gt=0.0)
    # Seconds dropped on both sides of every shot boundary (not at the start or end of the file).
    trim_s: float = Field(default=0.1, ge=0.0)
    # What to do with a shot longer than max_length_s: cut it into consecutive windows, keep only
    # its first window, or drop it.
    long_scenes: Literal["window", "first", "drop"] = "window"
    # Drop the frames around gradual boundaries (fades, dissolves): transition_s on each side.
    drop_transitions: bool = True
    transition_s: float = Field(default=0.5, ge=0.0)

    @model_validator(mode="after")
    def _lengths_consistent(self) -> ClipRules:
        if self.min_length_s > self.max_length_s:
            raise ValueError(f"min_length_s ({self.min_length_s}) exceeds max_length_s ({self.max_length_s})")
        return self


class ExtractConfig(Frozen):
    """How clips are cut and encoded: size, rate, codec settings and stream copy."""

    # Output short side in pixels (aspect kept, even dimensions, never upscaled); 0 keeps the size.
    short_side: int = Field(default=360, ge=0)
    # Output frame rate; 0 keeps the source timestamps (exact, also on VFR footage).
    fps: float = Field(default=0.0, ge=0.0)
    crf: int = Field(default=23, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    # Rotate pixels by the display matrix so clips play upright without metadata.
    apply_rotation: bool = True
    # Copy the H.264 packets instead of re-encoding when a clip starts and ends on keyframes and no
    # resize, rotation or frame-rate change is needed.
    allow_stream_copy: bool = False
    # Crop every clip of a file to the picture inside constant flat borders (letterbox, pillarbox,
    # windowbox), found on 8 frames spread over the file (curate/borders.py): bars teach a video
    # model nothing but bars. A file without borders is unchanged.
    crop_borders: bool = True
    thumbnail_width: int = Field(default=320, ge=16)
    thumbnail_quality: int = Field(default=85, ge=1, le=100)


class SplitConfig(Frozen):
    """Probe + scene detection + clip extraction. Fields are owned by the split stage."""

    probe: ProbeConfig = ProbeConfig()
    detect: DetectConfig = DetectConfig()
    clips: ClipRules = ClipRules()
    extract: ExtractConfig = ExtractConfig()
    # Cooperative per-file deadline (seconds of work on one file); 0 disables it.
    time_limit_s: float = Field(default=900.0, ge=0.0)
    # Ray resources of one per-file task, and how many run at once (0 = as many as CPUs allow).
    num_cpus: float = Field(default=1.0, gt=0.0)
    concurrency: int = Field(default=0, ge=0)
    # Completed files are committed to Lance in batches of this many (a killed job keeps them).
    commit_every: int = Field(default=4, ge=1)

    def decode_threads(self) -> int:
        """Decoder threads of one split task (`detect.decode_threads`, by default its CPUs)."""
        threads = self.detect.decode_threads
        return threads if threads is not None else max(1, int(self.num_cpus))
