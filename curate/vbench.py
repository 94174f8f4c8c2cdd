"""VBench's seven quality dimensions, measured with reelforge's own scorers.

VBench (Huang et al., 2024) scores generated video on dimensions that need no prompt. Each is computed
here by its published definition, with the models this project already runs in place of VBench's
(the substitutions are named; every value is in [0, 1] or close, higher is better):

- `subject_consistency`: for each frame i > 0, the mean of the cosine of its image features with the
  first frame's and with the previous frame's (each clamped at 0), averaged over frames. VBench uses
  DINO ViT-B/16 features; here the project's open_clip image tower on the centre crop the score stage
  gives it (curate.frames.tower_input: the subject usually sits in the middle).
- `background_consistency`: the same formula on CLIP image features of the whole frame. VBench uses
  CLIP ViT-B/32; here the same tower on the full frame letterboxed to a square (nothing cropped, so the
  surroundings count as much as the centre).
- `temporal_flickering`: (255 - mean absolute difference of consecutive frames, 0-255 RGB) / 255.
  VBench takes it on static videos only; `aggregate` does too (see there).
- `motion_smoothness`: the odd frames are predicted from their even neighbours and compared with the real
  ones: (255 - mean absolute error) / 255. VBench interpolates with the AMT network; here the middle frame
  is warped from both neighbours with optical flow (curate.motion's DIS flow; the intermediate flows are
  Super SloMo's linear approximation, Jiang et al. 2018, at t = 1/2).
- `dynamic_degree`: VBench's rule: frames taken at about 8 fps, per consecutive pair the mean of the top
  5% flow magnitudes, the video is dynamic (1) when at least round(4 * frames / 16) pairs exceed
  6 * max(1, 8 / fps) * min(h, w) / 256 pixels, else 0. VBench's RAFT is replaced by DIS flow; the
  threshold scales with the size the flow is computed at, as VBench scales it with the video's.
- `aesthetic_quality`: the LAION aesthetic head (curate.aesthetic) on the tower's features, / 10, mean
  over frames, as VBench does with the same head on CLIP ViT-L/14.
- `imaging_quality`: the score stage's technical quality (curate.quality: sharpness, blocking, exposure;
  0-1) times a noise term exp(-(sigma / eval.noise_sigma)^2), sigma the luma noise level by
  Immerkaer's estimator (1996). VBench uses MUSIQ / 100, a learnt no-reference quality model that marks
  both blur and noise down; the Laplacian sharpness alone reads noise as detail (heavy noise raised it
  to ~0.97 on the shared footage), hence the noise term (clean footage: sigma 0.3-2.6, term >= 0.93;
  Gaussian noise of std 25: sigma ~16, term 0.08).

Frames: the first `eval.max_frames` frames of a video, downscaled to a short side of at most
`eval.short_side` (never upscaled); the tower sees `eval.tower_frames` of them, spread evenly.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from curate.config import MotionConfig, QualityConfig, ScoreConfig
from curate.eval_config import EvalConfig
from curate.frames import FrameDecodeError, spread_indices, tower_input
from curate.motion import MotionScorer
from curate.quality import QualityScorer
from media import MediaError, fit_short_side, read_clip

DIMENSIONS = (
    "temporal_flickering",
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
)
# Dimensions computed from the image tower and the aesthetic head: placeholders when those are random.
TOWER_DIMENSIONS = ("subject_consistency", "background_consistency", "aesthetic_quality")
# VBench's final-score constants (scripts/constant.py): each dimension is min-max normalised with these
# bounds, then averaged with these weights into the "quality score".
VBENCH_NORMALIZE = {
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
}
VBENCH_WEIGHT = {d: (0.5 if d == "dynamic_degree" else 1.0) for d in DIMENSIONS}


@dataclass(frozen=True)
class Video:
    """Frames of a video to evaluate and their rate."""

    frames: np.ndarray  # (n, h, w, 3) uint8 RGB, consecutive, short side <= eval.short_side
    fps: float


def read_video(source: str | Path | bytes, cfg: EvalConfig) -> Video:
    """The first `max_frames` frames of a file or of MP4 bytes, the short side at most `short_side`.
    Raises FrameDecodeError with the reason when fewer than 3 frames decode."""
    try:
        clip = read_clip(source, first=cfg.max_frames, size=fit_short_side(cfg.short_side))
    except MediaError as err:
        raise FrameDecodeError(f"does not decode: {err}") from err
    if len(clip.frames) < 3:
        raise FrameDecodeError(f"{len(clip.frames)} frames decode; the temporal dimensions need at least 3")
    return Video(clip.frames, clip.nominal_fps)


def letterbox(frames: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W, 3) -> (n, size, size, 3): the whole frame scaled into the square, black bars around it."""
    out = np.zeros((frames.shape[0], size, size, 3), dtype=np.uint8)
    h, w = frames.shape[1:3]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size - nh) // 2, (size - nw) // 2
    for i, rgb in enumerate(frames):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        out[i, top : top + nh, left : left + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp)
    return out


def feature_consistency(features: np.ndarray) -> float:
    """VBench's subject/background consistency of (n, D) L2-normalised per-frame features."""
    if len(features) < 2:
        return 1.0
    to_first = np.clip(features[1:] @ features[0], 0.0, None)
    to_previous = np.clip(np.sum(features[1:] * features[:-1], axis=1), 0.0, None)
    return float(np.mean((to_first + to_previous) / 2))


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_level(frames: np.ndarray) -> float:
    """Immerkaer (1996) fast noise estimate: std of additive noise in 8-bit luma, mean over frames."""
    levels = []
    for rgb in frames:
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        response = cv2.filter2D(luma, -1, _NOISE_KERNEL)[1:-1, 1:-1]
        levels.append(np.sqrt(np.pi / 2) * float(np.abs(response).mean()) / 6.0)
    return float(np.mean(levels))


def imaging_quality(technical_quality: float, frames: np.ndarray, noise_sigma: float) -> float:
    """technical quality x exp(-(noise / noise_sigma)^2) (module docstring)."""
    return technical_quality * float(np.exp(-((noise_level(frames) / noise_sigma) ** 2)))


def temporal_flickering(frames: np.ndarray) -> float:
    """(255 - mean absolute difference of consecutive frames) / 255."""
    diffs = [cv2.absdiff(a, b).mean() for a, b in itertools.pairwise(frames)]
    return float((255.0 - np.mean(diffs)) / 255.0)


class FlowMeasures:
    """Motion smoothness and dynamic degree on DIS flow (curate.motion's scorer) at `flow_width`."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self.motion = MotionScorer(
            MotionConfig(method="dis", width=cfg.flow_width, dis_preset=cfg.dis_preset)
        )

    def _small(self, frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        width = min(self.cfg.flow_width, w)
        height = max(2, round(h * width / w))
        return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])

    def motion_smoothness(self, frames: np.ndarray) -> float:
        """Each odd frame predicted from its even neighbours by flow warping: (255 - MAE) / 255."""
        rgb = self._small(frames).astype(np.float32)
        grey = [cv2.cvtColor(f.astype(np.uint8), cv2.COLOR_RGB2GRAY) for f in rgb]
        h, w = rgb.shape[1:3]
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

        def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:  # image(x + flow(x))
            return np.asarray(
                cv2.remap(
                    image,
                    xs + flow[..., 0],
                    ys + flow[..., 1],
                    cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
            )

        errors = []
        for i in range(0, len(rgb) - 2, 2):
            f02 = self.motion.flow(grey[i], grey[i + 2])
            f20 = self.motion.flow(grey[i + 2], grey[i])
            # Super SloMo at t = 1/2: F(t->0) = -F(0->1)/4 + F(1->0)/4, F(t->1) = -F(t->0).
            to_first = 0.25 * (f20 - f02)
            middle = 0.5 * (warp(rgb[i], to_first) + warp(rgb[i + 2], -to_first))
            errors.append(float(np.abs(middle - rgb[i + 1]).mean()))
        return float((255.0 - np.mean(errors)) / 255.0)

    def dynamic_degree(self, frames: np.ndarray, fps: float) -> float:
        """VBench's rule (module docstring): 1.0 when the video moves, else 0.0."""
        picked = self._small(frames[:: max(1, round(fps / 8))])
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in picked]
        h, w = grey[0].shape
        threshold = max(1.0, 8.0 / fps) * 6.0 * min(h, w) / 256.0
        # VBench's count is round(4 * frames / 16); at least one pair must move (its 0 for very short
        # videos would call a frozen one dynamic).
        needed = max(1, round(4 * len(grey) / 16))
        top = max(1, int(h * w * 0.05))
        moving = 0
        for a, b in itertools.pairwise(grey):
            magnitude = cv2.magnitude(*cv2.split(self.motion.flow(a, b))).ravel()
            if float(np.mean(np.partition(magnitude, magnitude.size - top)[-top:])) > threshold:
                moving += 1
        return 1.0 if moving >= needed else 0.0


class VBenchScorer:
    """All seven dimensions of one video, and its mean image-tower feature (for Frechet distances)."""

    def __init__(self, cfg: EvalConfig, score: ScoreConfig) -> None:
        from curate.aesthetic import load_head
        from curate.image_tower import ImageTower

        self.cfg = cfg
        self.tower = ImageTower(score.image_tower)
        self.head, self.head_placeholder = load_head(
            score.aesthetic,
            self.tower.embed_dim,
            allow_random=score.image_tower.allow_random_weights,
            seed=score.image_tower.seed,
        )
        self.quality = QualityScorer(score.quality if score.quality.enabled else QualityConfig())
        self.flow = FlowMeasures(cfg)

    def models(self) -> dict[str, Any]:
        """The models behind the numbers, placeholders marked (as the score stage records them)."""
        return {
            "image_tower": self.tower.describe(),
            "aesthetic_head": {
                "layout": "laion-improved-aesthetic-predictor",
                "input_size": self.head.input_size,
                "placeholder": self.head_placeholder,
            },
            "optical_flow": {
                "method": "opencv-dis",
                "preset": self.cfg.dis_preset,
                "width": self.cfg.flow_width,
            },
            "imaging_quality": f"curate.quality.technical_quality x Immerkaer noise term ({self.cfg.noise_sigma})",
        }

    def placeholders(self) -> dict[str, str]:
        """{dimension: "eval/<model>"} for the values computed by random-weight models."""
        out = {}
        if self.tower.placeholder:
            out.update(
                dict.fromkeys(TOWER_DIMENSIONS, "eval/image_tower") | {"tower_embedding": "eval/image_tower"}
            )
        if self.head_placeholder:
            out.setdefault("aesthetic_quality", "eval/aesthetic_head")
        return out

    def __call__(self, video: Video) -> tuple[dict[str, float], np.ndarray]:
        """The tower-based dimensions of one video and its feature for the Frechet distance."""
        from curate.aesthetic import score_frames

        frames = video.frames
        picked = frames[spread_indices(len(frames), self.cfg.tower_frames)]
        centre = self.tower.embed(tower_input(picked, self.tower.image_size))
        whole = self.tower.embed(letterbox(picked, self.tower.image_size))
        mean = centre.mean(axis=0)
        scores = {
            "temporal_flickering": temporal_flickering(frames),
            "subject_consistency": feature_consistency(centre),
            "background_consistency": feature_consistency(whole),
            "motion_smoothness": self.flow.motion_smoothness(frames),
            "dynamic_degree": self.flow.dynamic_degree(frames, video.fps),
            "aesthetic_quality": float(np.mean(score_frames(self.head, centre)) / 10.0),
            "imaging_quality": imaging_quality(
                self.quality(frames).technical_quality,
                frames[spread_indices(len(frames), self.quality.cfg.frames)],
                self.cfg.noise_sigma,
            ),
        }
        return scores, (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """VBench's way: each dimension's mean over the videos (temporal flickering over the static ones,
    dynamic_degree 0, as VBench scores it on its static subset; over all when none is static), and the
    quality score: dimensions min-max normalised with VBench's bounds, weighted mean (dynamic degree 0.5)."""
    scored = [r for r in rows if r.get("error") is None]
    if not scored:
        return {"videos": 0}
    out: dict[str, Any] = {"videos": len(scored)}
    for dim in DIMENSIONS:
        pool = scored
        if dim == "temporal_flickering":
            static = [r for r in scored if r["dynamic_degree"] == 0.0]
            pool = static or scored
            out["temporal_flickering_videos"] = len(pool)
        out[dim] = float(np.mean([r[dim] for r in pool]))
    normalised = {d: (out[d] - lo) / (hi - lo) for d, (lo, hi) in VBENCH_NORMALIZE.items()}
    out["quality_score"] = sum(VBENCH_WEIGHT[d] * normalised[d] for d in DIMENSIONS) / sum(
        VBENCH_WEIGHT.values()
    )
    return out


class FeatureMoments:
    """Running count, sum and sum of outer products of (D,) features: the mean and covariance a
    Frechet distance needs, in O(D^2) memory however many videos are added."""

    def __init__(self) -> None:
        self.n = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def add(self, feature: np.ndarray) -> None:
        """Add one video's feature to the running sums."""
        f = np.asarray(feature, dtype=np.float64)
        if self._sum is None or self._outer is None:
            self._sum, self._outer = np.zeros_like(f), np.zeros((f.size, f.size))
        self.n += 1
        self._sum += f
        self._outer += np.outer(f, f)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and sample covariance of the features added."""
        if self.n < 2 or self._sum is None or self._outer is None:
            raise ValueError(f"a Frechet distance needs at least 2 videos on each side, got {self.n}")
        mean = self._sum / self.n
        return mean, (self._outer - self.n * np.outer(mean, mean)) / (self.n - 1)


def frechet_distance(a: np.ndarray | FeatureMoments, b: np.ndarray | FeatureMoments) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ((n, D) arrays or their moments),
    the FID formula: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). Needs 2 rows on each side."""
    from scipy import linalg

    mu_a, cov_a = _moments(a).mean_cov()
    mu_b, cov_b = _moments(b).mean_cov()
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # singular products (fewer videos than dimensions): FID's offset
        eps = np.eye(len(mu_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def _moments(features: np.ndarray | FeatureMoments) -> FeatureMoments:
    if isinstance(features, FeatureMoments):
        return features
    moments = FeatureMoments()
    for row in features:
        moments.add(row)
    return moments
