"""Camera motion apart from object motion, from the optical flow the motion scorer already computes.

Per frame pair, a similarity (shift, zoom, roll) is fitted with RANSAC to the flow on a regular grid
of points (the picture's border left out: content entering the frame has no flow to match), so a
moving subject covering less of the frame than the background is an outlier and the model is the
camera's. What the model does not explain, above the flow's noise, is `object_motion`.

Over the clip the pairs are summarised robustly (medians) and classified:

- `shaky`: the camera moves, but its frame pairs' shifts point in inconsistent directions (handheld
  wander) or jump from one frame to the next (jitter);
- `static`: the steady camera motion is under `static_speed`;
- `pan_left`/`pan_right`/`tilt_up`/`tilt_down`/`zoom_in`/`zoom_out`: one of the shift, the zoom
  (and the roll) dominates the others `dominance` times over, and most pairs agree;
- `complex`: anything else (a diagonal move, a pan with a zoom, a roll, pairs that disagree).

Sign conventions (flow = how the content moves across the frame, image y pointing down):
pan_left = the camera turns left, so the content moves right (+x); tilt_up = the content moves down
(+y); zoom_in = the content grows (scale > 1).

Speeds are fractions of the frame per second: x over the frame width, y over its height, averaged
over the grid; a pan at 0.2 moves the content a fifth of the frame width a second. Pair times come
from the frames' timestamps, so variable frame rate clips measure right.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from curate.config import CameraConfig

LABELS = (
    "static",
    "pan_left",
    "pan_right",
    "tilt_up",
    "tilt_down",
    "zoom_in",
    "zoom_out",
    "shaky",
    "complex",
)


@dataclass(frozen=True)
class CameraScores:
    """The camera columns of one clip: the motion label, speed, confidence and object motion."""

    camera_motion: str | None  # one of LABELS
    camera_speed: float | None  # mean displacement of the camera model, frame fractions per second
    camera_motion_confidence: float | None  # 0-1
    object_motion: float | None  # residual flow above the noise floor, same unit as camera_speed
    camera_error: str | None  # why the columns above are null (null when measured)

    @classmethod
    def unmeasured(cls, reason: str) -> CameraScores:
        """Scores with every value null and the reason in `camera_error`."""
        return cls(None, None, None, None, reason)


@dataclass(frozen=True)
class PairModels:
    """The camera model of every frame pair of a clip, in frame fractions (or log-scale) per second."""

    shift: np.ndarray  # (n, 2) content shift: x over the width, y over the height
    zoom: np.ndarray  # (n,) log scale change (> 0: the content grows)
    roll: np.ndarray  # (n,) rotation, radians (image coordinates, clockwise positive)
    speed: np.ndarray  # (n,) mean |model displacement| over the grid
    residual: np.ndarray  # (n,) mean residual above the noise floor over the grid (0 where under it)
    inliers: np.ndarray  # (n,) share of the grid the model explains
    run: np.ndarray  # (n,) index of the run (consecutive frames) each pair belongs to
    radius: float  # mean distance of the grid points from the centre, frame fractions


@dataclass(frozen=True)
class _Grid:
    """The grid points of one flow size: indices, centred positions, and their mean radius."""

    xs: np.ndarray
    ys: np.ndarray
    src: np.ndarray  # (n, 2) float32, pixels from the centre (RANSAC's input)
    z: np.ndarray  # (n,) complex128, the same positions as x + iy (the reweighted fit's input)
    width: int
    height: int
    radius: float  # mean distance from the centre, frame fractions

    def normalised(self, displacement: np.ndarray) -> np.ndarray:
        """|displacement| with x over the width and y over the height (frame fractions)."""
        return np.hypot(displacement.real / self.width, displacement.imag / self.height)


class CameraEstimator:
    """Fits the per-pair models (`fit`) and classifies a clip from them (`classify`)."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self._grids: dict[tuple[int, int], _Grid] = {}

    def grid(self, height: int, width: int) -> _Grid:
        """Points every `grid_step` px of the flow image, `margin` left out on every side."""
        key = (height, width)
        if key not in self._grids:
            step = self.cfg.grid_step
            mx = max(step // 2, round(self.cfg.margin * width))
            my = max(step // 2, round(self.cfg.margin * height))
            gx, gy = np.meshgrid(np.arange(mx, width - mx, step), np.arange(my, height - my, step))
            xs, ys = gx.ravel(), gy.ravel()
            cx, cy = xs - (width - 1) / 2, ys - (height - 1) / 2
            self._grids[key] = _Grid(
                xs=xs,
                ys=ys,
                src=np.stack([cx, cy], axis=1).astype(np.float32),
                z=cx + 1j * cy,
                width=width,
                height=height,
                radius=float(np.mean(np.hypot(cx / width, cy / height))) if xs.size else 0.0,
            )
        return self._grids[key]

    def corner_strength(self, grey: np.ndarray) -> np.ndarray:
        """Corner strength (the structure tensor's smaller eigenvalue) of a small grey frame at the grid
        points: 0 in flat areas and along lone edges, where flow is interpolated rather than measured."""
        grid = self.grid(*grey.shape[:2])
        strength: np.ndarray = cv2.cornerMinEigenVal(grey, blockSize=5, ksize=3)[grid.ys, grid.xs]
        return strength

    def fit(
        self, flows: list[list[np.ndarray]], intervals: list[np.ndarray], strengths: list[list[np.ndarray]]
    ) -> PairModels:
        """Models of every pair: `flows[r][k]` is pair k of run r (all of one size), `intervals[r][k]`
        its seconds, `strengths[r][k]` the corner strength of its first frame at the grid points
        (`corner_strength`); a point's flow counts in proportion to its strength over
        score.camera.corner_strength, capped at 1. Pairs without a positive
        interval (broken timestamps), enough textured points or a RANSAC model are left out."""
        pairs = [
            (r, flow, float(dt), strength)
            for r, (run_flows, run_dt, run_strengths) in enumerate(
                zip(flows, intervals, strengths, strict=True)
            )
            for flow, dt, strength in zip(run_flows, run_dt, run_strengths, strict=True)
            if dt > 0
        ]
        if not pairs:
            return _no_pairs()
        grid = self.grid(*pairs[0][1].shape[:2])
        if grid.xs.size < 8:
            return _no_pairs()
        kept, moved_xy, seeds, trust = [], [], [], []
        for r, flow, dt, strength in pairs:
            vectors = flow[grid.ys, grid.xs]
            weights = np.minimum(strength / self.cfg.corner_strength, 1.0).astype(np.float64)
            textured = weights >= 0.5
            if np.count_nonzero(textured) < 8:
                continue
            # RANSAC's best minimal model, on the textured points, only seeds the fit: OpenCV's own
            # refinement is a plain least squares over every inlier, which a coarse flow's halo
            # around a moving subject (under the inlier distance, over the noise) drags along.
            seed, _ = cv2.estimateAffinePartial2D(
                grid.src[textured],
                grid.src[textured] + vectors[textured],
                method=cv2.RANSAC,
                ransacReprojThreshold=self.cfg.noise_floor * grid.width,
                maxIters=self.cfg.ransac_iters,
                confidence=0.995,
                refineIters=0,
            )
            if seed is not None:
                kept.append((r, dt))
                moved_xy.append(vectors)
                trust.append(weights)
                seeds.append((complex(seed[0, 0], seed[1, 0]), complex(seed[0, 2], seed[1, 2])))
        if not kept:
            return _no_pairs()
        moved = np.ascontiguousarray(np.stack(moved_xy), dtype=np.float64).view(np.complex128)[..., 0]
        weights = np.stack(trust)
        start = np.asarray(seeds, dtype=np.complex128)
        c, t = _reweighted_similarity(grid.z, moved, weights, start[:, 0], start[:, 1])
        modelled = (c - 1)[:, None] * grid.z + t[:, None]
        residual = moved - modelled
        # Flow error grows with the displacement (a patch flow's error at a zoom's edges): what the
        # model leaves under the floor plus that share of its own displacement is noise.
        floor = self.cfg.noise_floor * grid.width + self.cfg.relative_noise * np.abs(modelled)
        outside = np.abs(residual) > floor
        total = weights.sum(axis=1)
        seconds = np.asarray([k[1] for k in kept])
        return PairModels(
            shift=np.stack([t.real / grid.width, t.imag / grid.height], axis=1) / seconds[:, None],
            zoom=np.log(np.maximum(np.abs(c), 1e-6)) / seconds,
            roll=np.angle(c) / seconds,
            speed=grid.normalised(modelled).mean(axis=1) / seconds,
            residual=(weights * np.where(outside, grid.normalised(residual), 0.0)).sum(axis=1)
            / total
            / seconds,
            inliers=1.0 - (weights * outside).sum(axis=1) / total,
            run=np.asarray([k[0] for k in kept], dtype=np.int64),
            radius=grid.radius,
        )

    def label(self, shift: np.ndarray, zoom: float, roll: float, radius: float) -> str:
        """The steady label of one camera model (speeds in frame fractions per second)."""
        parts = {
            "pan": abs(float(shift[0])),
            "tilt": abs(float(shift[1])),
            "zoom": abs(zoom) * radius,
            "roll": abs(roll) * radius,
        }
        if float(np.hypot(*shift)) + parts["zoom"] + parts["roll"] < self.cfg.static_speed:
            return "static"
        top, second = sorted(parts, key=parts.__getitem__, reverse=True)[:2]
        if top == "roll" or parts[top] < self.cfg.dominance * parts[second]:
            return "complex"
        if top == "pan":
            return "pan_left" if shift[0] > 0 else "pan_right"
        if top == "tilt":
            return "tilt_up" if shift[1] > 0 else "tilt_down"
        return "zoom_in" if zoom > 0 else "zoom_out"

    def jitter(self, pairs: PairModels) -> np.ndarray:
        """Frame-to-frame change of the model between consecutive pairs of each run (frame fractions/s)."""
        same_run = pairs.run[1:] == pairs.run[:-1]
        step = np.hypot(*np.diff(pairs.shift, axis=0).T) + np.abs(np.diff(pairs.zoom)) * pairs.radius
        within_runs: np.ndarray = step[same_run]
        return within_runs

    def is_shaky(self, pairs: PairModels, steady: float) -> bool:
        """The camera moves (mean pair shift over shaky_speed) but not one way: the pairs' shifts point
        in inconsistent directions (handheld wander), or jump from frame to frame (jitter)."""
        cfg = self.cfg
        lengths = np.hypot(*pairs.shift.T)
        moving = float(np.mean(lengths))
        if moving < cfg.shaky_speed:
            return False
        consistency = float(np.hypot(*pairs.shift.mean(axis=0))) / moving
        jumps = self.jitter(pairs)
        jitter = float(np.median(jumps)) if jumps.size else 0.0
        return consistency < cfg.shaky_consistency or (
            jitter > cfg.shaky_speed and jitter > cfg.shaky_ratio * steady
        )

    def classify(self, pairs: PairModels) -> CameraScores:
        """Label the camera motion of a clip from its frame pairs' camera models."""
        cfg = self.cfg
        n = pairs.shift.shape[0]
        if n < cfg.min_pairs:
            return CameraScores.unmeasured(
                f"too short for camera motion: {n} frame pair(s) fitted, score.camera.min_pairs is {cfg.min_pairs}"
            )
        shift = np.median(pairs.shift, axis=0)
        zoom = float(np.median(pairs.zoom))
        roll = float(np.median(pairs.roll))
        steady = float(np.hypot(*shift)) + (abs(zoom) + abs(roll)) * pairs.radius
        inliers = float(np.mean(pairs.inliers))
        each = Counter(
            self.label(pairs.shift[i], pairs.zoom[i], pairs.roll[i], pairs.radius) for i in range(n)
        )
        if self.is_shaky(pairs, steady):
            # Confidence: the share of pairs whose own model moves the frame more than shaky_speed.
            label, agreement = "shaky", float(np.mean(np.hypot(*pairs.shift.T) > cfg.shaky_speed))
        else:
            label = self.label(shift, zoom, roll, pairs.radius)
            agreement = each[label] / n
            if agreement < cfg.min_agreement:
                # The pairs tell different stories (a pan that turns into a tilt, a reversal).
                label, agreement = "complex", 1.0 - each.most_common(1)[0][1] / n
        return CameraScores(
            camera_motion=label,
            camera_speed=float(np.mean(pairs.speed)),
            camera_motion_confidence=float(np.clip(agreement * inliers, 0.0, 1.0)),
            object_motion=float(np.mean(pairs.residual)),
            camera_error=None,
        )

    def visibility_error(self, runs: tuple[np.ndarray, ...], strengths: list[list[np.ndarray]]) -> str | None:
        """Why flow cannot be trusted on these grey runs (too dark, too little texture), or None."""
        if not runs:
            return None
        luma = float(np.mean([run[:, ::4, ::4].mean() for run in runs])) / 255.0
        if luma < self.cfg.min_luma:
            return (
                f"too dark for flow: mean luma {luma:.3f} under score.camera.min_luma {self.cfg.min_luma:g}"
            )
        points = [s for run in strengths for s in run]
        if not points:
            return None
        textured = float(np.mean(np.concatenate(points) >= self.cfg.corner_strength))
        if textured < self.cfg.min_textured:
            return (
                f"too little texture for flow: {textured:.3f} of the frame textured, under "
                f"score.camera.min_textured {self.cfg.min_textured:g}"
            )
        return None


def _no_pairs() -> PairModels:
    empty = np.zeros(0)
    return PairModels(np.zeros((0, 2)), empty, empty, empty, empty, empty, np.zeros(0, np.int64), 0.0)


def _reweighted_similarity(
    z: np.ndarray, moved: np.ndarray, trust: np.ndarray, c: np.ndarray, t: np.ndarray, iters: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair p, the similarity z -> c[p] z + t[p] (c = scale * e^(i roll)) best matching
    z -> z + moved[p], from the seeds (c, t), by iteratively reweighted least squares: Cauchy weights
    times the points' `trust`.

    With points as complex numbers each weighted fit is a few sums, done for every pair at once. The
    weights' scale is the residuals' median absolute deviation under the current model, so the fit
    keeps to the points that agree with it as closely as the flow's own noise allows.
    """
    target = z[None, :] + moved
    half = z.size // 2
    for _ in range(iters):
        resid = np.abs(target - (c[:, None] * z + t[:, None]))
        scale = np.maximum(1.4826 * np.partition(resid, half, axis=1)[:, half], 1e-3)
        weight = trust / (1.0 + (resid / (2.385 * scale[:, None])) ** 2)
        total = weight.sum(axis=1)
        zm = (weight @ z) / total
        tm = (weight * target).sum(axis=1) / total
        dz = z[None, :] - zm[:, None]
        c = (weight * np.conj(dz) * (target - tm[:, None])).sum(axis=1) / (weight * np.abs(dz) ** 2).sum(
            axis=1
        )
        t = tm - c * zm
    return c, t
