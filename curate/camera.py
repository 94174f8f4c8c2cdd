"""Camera motion apart from object motion, from the optical flow the motion scorer already computes.

Per frame pair, a similarity (shift, zoom, roll) is fitted to the flow on a regular grid of points:
seeded with the pair's median vector and fitted by least squares weighted against the points far
from it, so a moving subject covering less of the frame than the background is an outlier and the
model is the camera's. The picture's border is left out: there a patch of flow partly matches
content that enters or leaves the frame. What the model does not explain, above the flow's noise,
is `object_motion`.

The flow is the motion scorer's, one DIS pyramid level finer than its motion-only default when the
camera runs (score.motion.dis_finest_scale, dis_patch_stride, dis_gradient_iterations): no second
decode, no second flow.

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

Speeds are fractions of the frame per second: x over the frame width, y over its height, the camera
model's displacement averaged over the whole frame (a zoom by log-scale z a second: z times
FRAME_RADIUS); a pan at 0.2 moves the content a fifth of the frame width a second. `object_motion`
is the same unit, averaged over the grid. Pair times come from the frames' timestamps, so variable
frame rate clips measure right.

The work is fixed per clip (a few frame pairs of small grey frames) while decoding grows with the
clip, so short clips are its worst case (bench/camera.py): there each numpy call's overhead counts,
so the fit handles every pair of a clip at once, the classifier works on plain floats, and texture
is read in one call on the frames halved, the flow's own finest level.
"""

from __future__ import annotations

import math
import operator
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

# Mean distance of a frame's points from its centre, x over the width and y over the height (the unit
# square's): a zoom by log-scale z moves the picture z times this on average.
FRAME_RADIUS = float((np.sqrt(2.0) + np.arcsinh(1.0)) / 6.0)


@dataclass(frozen=True)
class CameraScores:
    """The camera columns of one clip (curate/camera.py's conventions; all null with camera_error)."""

    camera_motion: str | None  # one of LABELS
    camera_speed: float | None  # mean displacement of the camera model, frame fractions per second
    camera_motion_confidence: float | None  # 0-1
    object_motion: float | None  # residual flow above the noise floor, same unit as camera_speed
    camera_error: str | None  # why the columns above are null (null when measured)

    @classmethod
    def unmeasured(cls, reason: str) -> CameraScores:
        """Null scores with the reason they could not be measured."""
        return cls(None, None, None, None, reason)


@dataclass(frozen=True)
class PairModels:
    """The camera model of every frame pair of a clip, in frame fractions (or log-scale) per second."""

    shift: np.ndarray  # (n, 2) content shift: x over the width, y over the height
    zoom: np.ndarray  # (n,) log scale change (> 0: the content grows)
    roll: np.ndarray  # (n,) rotation, radians (image coordinates, clockwise positive)
    speed: np.ndarray  # (n,) mean |model displacement| over the frame
    residual: np.ndarray  # (n,) mean residual above the noise floor over the grid (0 where under it)
    inliers: np.ndarray  # (n,) share of the grid the model explains
    run: np.ndarray  # (n,) index of the run (consecutive frames) each pair belongs to

    @classmethod
    def empty(cls) -> PairModels:
        """No usable frame pair."""
        none = np.zeros(0)
        return cls(np.zeros((0, 2)), none, none, none, none, none, np.zeros(0, np.int64))


@dataclass(frozen=True)
class _Grid:
    """The grid points of one flow size: where they are in the flow image, and centred positions."""

    rows: slice  # the grid's rows and columns of the flow image (a view of a flow, no gather)
    cols: slice
    around: tuple[slice, slice]  # the flow image's area texture() reads: the points and 6 px about
    halved: tuple[np.ndarray, ...]  # the points in that area halved (np.ix_ indices)
    z: np.ndarray  # (n,) complex128, the same positions as x + iy (the reweighted fit's input)
    conj_z: np.ndarray  # its conjugate and squared modulus, the fit's constants
    z_squared: np.ndarray
    points: np.ndarray  # z, then the centres of frame_cells cells tiling the frame (speed's average)
    frame_cells: int
    unit: np.ndarray  # (2,) 1 / (width, height): pixels to frame fractions
    width: int


class CameraEstimator:
    """Fits the per-pair models (`fit`) and classifies a clip from them (`classify`)."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self._grids: dict[tuple[int, int], _Grid] = {}

    def grid(self, height: int, width: int) -> _Grid:
        """Points every `grid_step` px of the flow image, at least `margin` from every side, centred."""
        key = (height, width)
        if key not in self._grids:
            step = self.cfg.grid_step
            rows = _centred(height, max(step // 2, round(self.cfg.margin * height)), step)
            cols = _centred(width, max(step // 2, round(self.cfg.margin * width)), step)
            ys, xs = np.arange(height)[rows], np.arange(width)[cols]
            # Halved, a point's corner strength reads 3 px about it (a 5 px block of 3 px gradients).
            y0, y1, x0, x1 = (
                (int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])) if ys.size and xs.size else (0,) * 4
            )
            top, bottom = max(0, y0 // 2 - 3), min(height // 2, y1 // 2 + 4)
            left, right = max(0, x0 // 2 - 3), min(width // 2, x1 // 2 + 4)
            z = ((xs - (width - 1) / 2)[None, :] + 1j * (ys - (height - 1) / 2)[:, None]).ravel()
            cells = (np.arange(8) + 0.5) / 8 - 0.5
            self._grids[key] = _Grid(
                rows=rows,
                cols=cols,
                around=(slice(2 * top, 2 * bottom), slice(2 * left, 2 * right)),
                halved=np.ix_(ys // 2 - top, xs // 2 - left),
                z=z,
                conj_z=np.conj(z),
                z_squared=np.abs(z) ** 2,
                points=np.concatenate([z, (cells[None, :] * width + 1j * cells[:, None] * height).ravel()]),
                frame_cells=cells.size**2,
                unit=np.array([1.0 / width, 1.0 / height]),
                width=width,
            )
        return self._grids[key]

    def texture(self, greys: list[np.ndarray]) -> tuple[np.ndarray, float]:
        """Corner strength (the structure tensor's smaller eigenvalue) at the grid points of each grey
        flow frame, (frames, points), and their mean luma (0-255) about the grid, both on the frames
        halved as DIS halves them for its finest level when the camera runs: its 8 px patches measure
        flow where this is strong and interpolate it over flat areas and lone edges.

        The frames' areas are read as one stacked image, one call instead of one a frame: with a
        margin of 6 px or more, a point reads no rows of its neighbour in the stack."""
        grid = self.grid(*greys[0].shape[:2])
        if not grid.z.size:  # a flow image too small for a grid: nothing to fit
            return np.zeros((len(greys), 0)), float(np.mean([cv2.mean(grey)[0] for grey in greys]))
        # Each area has an even number of rows: halving the stack halves each frame on its own.
        areas = np.concatenate([grey[grid.around] for grey in greys])
        halved = cv2.resize(areas, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        strength = cv2.cornerMinEigenVal(halved, blockSize=5, ksize=3).reshape(
            len(greys), -1, halved.shape[1]
        )
        return strength[:, grid.halved[0], grid.halved[1]].reshape(len(greys), -1), cv2.mean(halved)[0]

    def visibility_error(self, luma: float, strengths: np.ndarray, pairs: list[int]) -> str | None:
        """Why flow cannot be trusted on a clip, or None: `luma` is the mean luma (0-255) of its runs'
        first frames about the grid, `strengths[r]` the corner strength of run r's first frame at the
        grid points (`texture`), which serves each of its `pairs[r]` frame pairs."""
        if luma / 255.0 < self.cfg.min_luma:
            return (
                f"too dark for flow: mean luma {luma / 255.0:.3f} under score.camera.min_luma "
                f"{self.cfg.min_luma:g}"
            )
        if not strengths.size:
            return None
        strong = strengths >= self.cfg.corner_strength
        if min(pairs) == max(pairs):  # runs of one length: their pairs weigh alike
            textured = np.count_nonzero(strong) / strong.size
        else:
            counts = np.count_nonzero(strong, axis=1).tolist()
            textured = sum(map(operator.mul, counts, pairs)) / (strong.shape[1] * sum(pairs))
        if textured < self.cfg.min_textured:
            return (
                f"too little texture for flow: {textured:.3f} of the frame textured, under "
                f"score.camera.min_textured {self.cfg.min_textured:g}"
            )
        return None

    def fit(
        self, flows: list[np.ndarray], seconds: np.ndarray, runs: np.ndarray, strengths: np.ndarray
    ) -> PairModels:
        """Models of every pair: `flows[p]` is the flow field of pair p (all of one size), `seconds[p]` its
        interval, `runs[p]` the run it belongs to; `strengths[r]` is the corner strength of run r's
        first frame at the grid points (`texture`). A point's flow counts in proportion to its
        strength over score.camera.corner_strength, capped at 1. Pairs without a positive interval
        (broken timestamps) or 8 textured points are left out."""
        if not flows or (grid := self.grid(*flows[0].shape[:2])).z.size < 8:
            return PairModels.empty()
        vectors = np.array([flow[grid.rows, grid.cols] for flow in flows], np.float64).reshape(
            len(flows), -1, 2
        )
        trust = np.minimum(
            np.multiply(strengths[runs], 1.0 / self.cfg.corner_strength, dtype=np.float64), 1.0
        )
        usable = (seconds > 0) & (np.count_nonzero(trust >= 0.5, axis=1) >= 8)
        if not usable.all():
            if not usable.any():
                return PairModels.empty()
            vectors, trust, seconds, runs = vectors[usable], trust[usable], seconds[usable], runs[usable]
        moved = vectors.view(np.complex128)[..., 0]
        # Seeded with the median vector, a shift alone: the camera's when it moves most of the grid (a
        # moving subject covering less does not move the median), about which one reweighted fit
        # finds the zoom and roll too. On the camera tests' clips it labels as well as RANSAC's best
        # minimal model refined by two reweighted rounds did, better with subjects of half the
        # frame's height, at under half the cost.
        half, n = (grid.z.size - 1) // 2, grid.z.size // 2
        middle = np.partition(vectors, (half, n), axis=1)
        t = (0.5 * (middle[:, half] + middle[:, n])).view(np.complex128)[:, 0]
        c, t = _reweighted_similarity(grid, moved, trust, t)
        # The model's displacement at the grid points, then at the frame's cells (the speed's average).
        displaced = np.multiply.outer(c - 1, grid.points) + t[:, None]
        modelled = displaced[:, : grid.z.size]
        residual = moved - modelled
        # Flow error grows with the displacement (a patch flow's error at a zoom's edges): what the
        # model leaves under the floor plus that share of its own displacement is noise.
        floor = self.cfg.noise_floor * grid.width + self.cfg.relative_noise * np.abs(modelled)
        outside = trust * (np.abs(residual) > floor)
        total = trust.sum(axis=1)
        rate = 1.0 / seconds
        return PairModels(
            shift=t.view(np.float64).reshape(-1, 2) * grid.unit * rate[:, None],
            zoom=np.log(np.maximum(np.abs(c), 1e-6)) * rate,
            roll=np.angle(c) * rate,
            speed=_fractions(displaced[:, grid.z.size :], grid.unit).sum(axis=1) * (rate / grid.frame_cells),
            residual=(outside * _fractions(residual, grid.unit)).sum(axis=1) / total * rate,
            inliers=1.0 - outside.sum(axis=1) / total,
            run=runs,
        )

    def label(self, shift_x: float, shift_y: float, zoom: float, roll: float) -> str:
        """The steady label of one camera model, in frame fractions (or log-scale, radians) per second."""
        parts = (abs(shift_x), abs(shift_y), abs(zoom) * FRAME_RADIUS, abs(roll) * FRAME_RADIUS)
        if math.hypot(shift_x, shift_y) + parts[2] + parts[3] < self.cfg.static_speed:
            return "static"
        # max keeps the first of equal parts: pan, tilt, zoom, roll in that order.
        top = max(range(4), key=parts.__getitem__)
        if top == 3 or parts[top] < self.cfg.dominance * sorted(parts)[-2]:
            return "complex"
        if top == 0:
            return "pan_left" if shift_x > 0 else "pan_right"
        if top == 1:
            return "tilt_up" if shift_y > 0 else "tilt_down"
        return "zoom_in" if zoom > 0 else "zoom_out"

    def classify(self, pairs: PairModels) -> CameraScores:
        """The clip's label, speed, confidence and object motion from its pairs' camera models."""
        cfg = self.cfg
        n = len(pairs.run)
        if n < cfg.min_pairs:
            return CameraScores.unmeasured(
                f"too short for camera motion: {n} frame pair(s) fitted, score.camera.min_pairs is {cfg.min_pairs}"
            )
        # A clip has a handful of pairs: plain floats cost less than numpy's overhead per call.
        xs, ys = pairs.shift.T.tolist()
        zooms, rolls, runs = pairs.zoom.tolist(), pairs.roll.tolist(), pairs.run.tolist()
        shift_x, shift_y, zoom, roll = _median(xs), _median(ys), _median(zooms), _median(rolls)
        steady = math.hypot(shift_x, shift_y) + (abs(zoom) + abs(roll)) * FRAME_RADIUS
        if self.is_shaky(xs, ys, zooms, runs, steady):
            # Confidence: the share of pairs whose own model moves the frame more than shaky_speed.
            label, agreement = (
                "shaky",
                sum(length > cfg.shaky_speed for length in map(math.hypot, xs, ys)) / n,
            )
        else:
            each = list(map(self.label, xs, ys, zooms, rolls))
            label = self.label(shift_x, shift_y, zoom, roll)
            agreement = each.count(label) / n
            if agreement < cfg.min_agreement:
                # The pairs tell different stories (a pan that turns into a tilt, a reversal).
                label, agreement = "complex", 1.0 - max(map(each.count, set(each))) / n
        inliers = float(pairs.inliers.sum()) / n
        return CameraScores(
            camera_motion=label,
            camera_speed=float(pairs.speed.sum()) / n,
            camera_motion_confidence=min(max(agreement * inliers, 0.0), 1.0),
            object_motion=float(pairs.residual.sum()) / n,
            camera_error=None,
        )

    def is_shaky(
        self, xs: list[float], ys: list[float], zooms: list[float], runs: list[int], steady: float
    ) -> bool:
        """The camera moves (the pairs' shifts `xs`, `ys` average over shaky_speed) but not one way: they
        point in inconsistent directions (handheld wander), or the model jumps between consecutive
        pairs of a run (`runs`: each pair's) by more than shaky_speed and shaky_ratio times the
        `steady` motion (median jump)."""
        cfg = self.cfg
        n = len(xs)
        moving = sum(map(math.hypot, xs, ys)) / n
        if moving < cfg.shaky_speed:
            return False
        consistency = math.hypot(sum(xs) / n, sum(ys) / n) / moving
        jumps = [
            math.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) + abs(zooms[i + 1] - zooms[i]) * FRAME_RADIUS
            for i in range(n - 1)
            if runs[i + 1] == runs[i]
        ]
        jitter = _median(jumps) if jumps else 0.0
        return consistency < cfg.shaky_consistency or (
            jitter > cfg.shaky_speed and jitter > cfg.shaky_ratio * steady
        )


def _centred(size: int, margin: int, step: int) -> slice:
    """Every `step`-th pixel of `size` at least `margin` from both ends, the slack split evenly."""
    count = max(0, (size - 1 - 2 * margin) // step + 1)
    start = (size - 1 - (count - 1) * step) // 2 if count else margin
    return slice(start, start + count * step, step)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def _fractions(displacement: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """|displacement| (complex, pixels) with x over the width and y over the height (frame fractions)."""
    xy = displacement.view(np.float64).reshape(*displacement.shape, 2) * unit
    fractions: np.ndarray = np.abs(xy.view(np.complex128)[..., 0])
    return fractions


def _reweighted_similarity(
    grid: _Grid, moved: np.ndarray, trust: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair p, the similarity z -> c[p] z + t[p] (c = scale * e^(i roll)) of the grid's points z
    best matching z -> z + moved[p], by least squares weighted with the points' `trust` times Cauchy
    weights of their residuals under the seed, z -> z + shift[p].

    With points as complex numbers the weighted fit is the closed form of a similarity's least
    squares, a few weighted sums, for every pair at once. The Cauchy weights' scale is the residuals'
    median absolute deviation under the seed: the points that move with the median vector weigh
    most, a moving subject and its halo hardly at all, and a zoom's or roll's spread of vectors
    about the median, larger than the noise, still weighs enough points to be fitted.
    """
    resid = np.abs(moved - shift[:, None])
    half = moved.shape[1] // 2
    # Cauchy's 2.385 times the residuals' robust standard deviation (1.4826 median absolute ones).
    scale = np.maximum(np.partition(resid, half, axis=1)[:, half], 1e-3 / 1.4826) * (2.385 * 1.4826)
    resid /= scale[:, None]
    np.square(resid, out=resid)
    resid += 1.0
    weight = np.divide(trust, resid, out=resid)
    # The sums over the targets z + moved, split: sum(w (z + m)) and sum(w conj(z) (z + m)).
    total = weight.sum(axis=1)
    sum_z = weight @ grid.z
    sum_zz = weight @ grid.z_squared
    sum_target = sum_z + np.einsum("pn,pn->p", weight, moved)
    spread = sum_zz + np.einsum("pn,pn->p", weight, grid.conj_z * moved)
    c = (spread - sum_z.conj() * sum_target / total) / (sum_zz - (sum_z.real**2 + sum_z.imag**2) / total)
    return c, (sum_target - c * sum_z) / total
