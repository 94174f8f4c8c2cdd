"""Technical quality of sampled frames: sharpness, exposure, contrast, colourfulness, blockiness.

All measures are plain numpy/OpenCV on `frames` of the RGB frames from curate.frames, averaged
per clip. Sharpness (a resolution-dependent measure) is taken after downscaling to `max_side`, so
clips of different sizes compare on one scale; exposure, contrast and colourfulness are population
statistics, read on a pixel grid of at most `stats_max_pixels`; blockiness needs the codec's 8x8
grid and is measured at decoded size. Everything is 8-bit/int16/float32 OpenCV work: about 0.5 ms
per 640x360 frame on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from curate.config import QualityConfig
from curate.frames import spread_indices


@dataclass(frozen=True)
class QualityScores:
    """The technical quality columns of one clip."""

    sharpness: float  # variance of the Laplacian of luma (0-255 scale)
    luma_mean: float  # 0-1
    clipped_black: float  # fraction of pixels at or under black_level
    clipped_white: float  # fraction of pixels at or over white_level
    contrast: float  # RMS contrast: std of luma, 0-1
    colorfulness: float  # Hasler & Süsstrunk (2003) M metric
    # Mean luma step across 8-pixel block borders over the mean step elsewhere; 1 = no blocking.
    blockiness: float
    too_dark: bool
    too_bright: bool
    # 0-1 summary: sharpness, blocking and exposure terms multiplied (see technical_quality()).
    technical_quality: float


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


def _pixel_grid(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """About every k-th pixel of every k-th row, at most `max_pixels` of them (0 = all).

    For statistics of the pixel population (means, spreads, fractions) such a grid is an unbiased
    sample: it estimates them without the blur an area resize would add. A nearest-neighbour resize
    by 1/k reads it (exactly when k divides the size), much faster than copying a strided view.
    """
    h, w = image.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels)))) if max_pixels else 1
    if step == 1:
        return image
    return cv2.resize(image, (-(-w // step), -(-h // step)), interpolation=cv2.INTER_NEAREST)


def sharpness(luma: np.ndarray) -> float:
    """Variance of the Laplacian of 8-bit luma (higher is sharper)."""
    # int16 holds the 3x3 Laplacian of 8-bit luma exactly (|L| <= 1020); meanStdDev sums in double.
    _, std = cv2.meanStdDev(cv2.Laplacian(luma, cv2.CV_16S))
    return float(std[0, 0] ** 2)


@dataclass(frozen=True)
class Exposure:
    """Exposure statistics of a frame's luma."""

    luma_mean: float  # 0-1
    contrast: float  # std of luma, 0-1
    clipped_black: float
    clipped_white: float


def exposure(luma: np.ndarray, black_level: int, white_level: int) -> Exposure:
    """Mean, spread and clipped fractions of 8-bit luma, all from one 256-bin histogram."""
    hist = cv2.calcHist([luma], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    n = max(hist.sum(), 1.0)
    levels = np.arange(256, dtype=np.float64)
    mean = float(hist @ levels / n)
    var = max(float(hist @ (levels * levels) / n - mean * mean), 0.0)
    return Exposure(
        luma_mean=mean / 255.0,
        contrast=float(np.sqrt(var)) / 255.0,
        clipped_black=float(hist[: black_level + 1].sum() / n),
        clipped_white=float(hist[white_level:].sum() / n),
    )


# Rows of the opponent colour transform applied to (r, g, b): rg = r - g, yb = (r + g) / 2 - b.
_OPPONENT = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]], dtype=np.float32)


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) M: spread and mean of the opponent channels rg and yb."""
    opponent = cv2.transform(rgb.astype(np.float32), _OPPONENT)  # (h, w, 2): rg, yb
    mean, std = cv2.meanStdDev(opponent)
    return float(np.hypot(std[0, 0], std[1, 0]) + 0.3 * np.hypot(mean[0, 0], mean[1, 0]))


def blockiness(luma: np.ndarray, block: int = 8) -> float:
    """Ratio of the mean absolute luma step at block borders to the step inside blocks."""
    ratios = []
    # Horizontal steps averaged down each column (dim 0), vertical steps along each row (dim 1):
    # every line has as many steps, so averaging the per-line means equals averaging the steps.
    for later, earlier, dim in ((luma[:, 1:], luma[:, :-1], 0), (luma[1:], luma[:-1], 1)):
        n = later.shape[1 - dim]
        if n < 2 * block:
            continue
        steps = cv2.absdiff(later, earlier)
        per_line = cv2.reduce(steps, dim, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel().astype(np.float64)
        at_border = per_line[block - 1 :: block]
        inside = (per_line.sum() - at_border.sum()) / (n - at_border.size)
        ratios.append((float(at_border.mean()) + 1e-3) / (inside + 1e-3))
    return float(np.mean(ratios)) if ratios else 1.0


def technical_quality(
    sharp: float, blocky: float, luma_mean: float, clipped: float, cfg: QualityConfig
) -> float:
    """One 0-1 technical quality score from sharpness, blocking, exposure and clipping."""
    sharp_term = 1.0 - np.exp(-sharp / cfg.sharpness_scale)
    # Blocking ratios of ~1 are clean; 2 (border steps twice the interior ones) is badly blocked.
    block_term = float(np.clip(2.0 - blocky, 0.0, 1.0))
    # Exposure: 1 inside [dark_luma, bright_luma], falling linearly to 0 at black/white, minus clipping.
    if luma_mean < cfg.dark_luma:
        exposure_term = luma_mean / max(cfg.dark_luma, 1e-6)
    elif luma_mean > cfg.bright_luma:
        exposure_term = (1.0 - luma_mean) / max(1.0 - cfg.bright_luma, 1e-6)
    else:
        exposure_term = 1.0
    exposure_term *= 1.0 - min(clipped, 1.0)
    return float(sharp_term * block_term * exposure_term)


class QualityScorer:
    """Measures the technical quality columns of a clip's frames."""

    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def __call__(self, frames: np.ndarray) -> QualityScores:
        """frames: (n, H, W, 3) uint8 RGB."""
        if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) RGB frames, got shape {frames.shape}")
        cfg = self.cfg
        picked = frames[spread_indices(frames.shape[0], cfg.frames)]
        # Per frame: sharpness, luma mean, black, white, contrast, colourfulness, blockiness.
        per_frame = np.empty((picked.shape[0], 7))
        for i, rgb in enumerate(picked):
            full_luma = _luma(rgb)
            luma = _downscale(full_luma, cfg.max_side)
            expo = exposure(_pixel_grid(luma, cfg.stats_max_pixels), cfg.black_level, cfg.white_level)
            per_frame[i] = (
                sharpness(luma),
                expo.luma_mean,
                expo.clipped_black,
                expo.clipped_white,
                expo.contrast,
                colorfulness(_pixel_grid(rgb, cfg.stats_max_pixels)),
                blockiness(full_luma),
            )
        sharp, luma_mean, black, white, contrast, colour, block = (float(v) for v in per_frame.mean(axis=0))
        return QualityScores(
            sharpness=sharp,
            luma_mean=luma_mean,
            clipped_black=black,
            clipped_white=white,
            contrast=contrast,
            colorfulness=colour,
            blockiness=block,
            too_dark=luma_mean < cfg.dark_luma,
            too_bright=luma_mean > cfg.bright_luma,
            technical_quality=technical_quality(sharp, block, luma_mean, black + white, cfg),
        )
