"""Technical quality of sampled frames: sharpness, exposure, contrast, colourfulness, blockiness.

All measures are plain numpy/OpenCV on the RGB frames from curate.frames. Sharpness, exposure,
contrast and colourfulness are measured after downscaling to `max_side`, so clips of different
sizes compare on one scale; blockiness needs the codec's 8x8 grid and is measured at decoded size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from curate.config import QualityConfig


@dataclass(frozen=True)
class QualityScores:
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


def _downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def sharpness(luma: np.ndarray) -> float:
    return float(cv2.Laplacian(luma, cv2.CV_64F).var())


def colorfulness(rgb: np.ndarray) -> float:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def blockiness(luma: np.ndarray, block: int = 8) -> float:
    """Ratio of the mean absolute luma step at block borders to the step inside blocks."""
    y = luma.astype(np.float32)
    ratios = []
    for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        n = steps.shape[1]
        if n < 2 * block:
            continue
        at_border = np.zeros(n, dtype=bool)
        at_border[block - 1 :: block] = True
        inside = steps[:, ~at_border].mean()
        ratios.append((steps[:, at_border].mean() + 1e-3) / (inside + 1e-3))
    return float(np.mean(ratios)) if ratios else 1.0


def technical_quality(sharp: float, blocky: float, luma_mean: float, clipped: float, cfg: QualityConfig) -> float:
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
    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def __call__(self, frames: np.ndarray) -> QualityScores:
        """frames: (n, H, W, 3) uint8 RGB."""
        if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) RGB frames, got shape {frames.shape}")
        cfg = self.cfg
        per = {k: [] for k in ("sharp", "luma", "black", "white", "contrast", "colour", "block")}
        for rgb in frames:
            per["block"].append(blockiness(_luma(rgb)))
            small = _downscale(rgb, cfg.max_side)
            luma = _luma(small)
            per["sharp"].append(sharpness(luma))
            per["luma"].append(luma.mean() / 255.0)
            per["black"].append(np.mean(luma <= cfg.black_level))
            per["white"].append(np.mean(luma >= cfg.white_level))
            per["contrast"].append(luma.std() / 255.0)
            per["colour"].append(colorfulness(small))
        m = {k: float(np.mean(v)) for k, v in per.items()}
        return QualityScores(
            sharpness=m["sharp"],
            luma_mean=m["luma"],
            clipped_black=m["black"],
            clipped_white=m["white"],
            contrast=m["contrast"],
            colorfulness=m["colour"],
            blockiness=m["block"],
            too_dark=m["luma"] < cfg.dark_luma,
            too_bright=m["luma"] > cfg.bright_luma,
            technical_quality=technical_quality(m["sharp"], m["block"], m["luma"], m["black"] + m["white"], cfg),
        )
