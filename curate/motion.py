"""Motion score: how much the picture moves, whether the clip is still, and camera shake.

The same flow fields also give the camera model and object motion (curate/camera.py) when a camera
config is passed: no second decode, no second flow. The camera needs them one DIS pyramid level finer
(MotionConfig.dis_finest_scale, dis_patch_stride, dis_gradient_iterations), so with it the motion
scores are read from that finer flow.

Dense optical flow (OpenCV DIS, or Farneback) on small grey frames, or the codec's motion vectors
(read during the one decode, no flow computed). Magnitudes are per frame interval and normalised by
the frame diagonal, so clips of any size compare on one scale.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from curate.camera import CameraEstimator, CameraScores, PairModels
from curate.config import CameraConfig, MotionConfig
from curate.frames import ClipFrames, spread_indices


@dataclass(frozen=True)
class MotionScores:
    """The motion columns of one clip."""

    motion: float  # mean flow magnitude per frame / frame diagonal
    motion_max: float  # largest per-pair mean magnitude, same unit
    is_still: bool
    # Mean change of the global (median) motion vector between consecutive frame pairs, same unit:
    # ~0 for a steady pan, large when the camera shakes.
    camera_shake: float


_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# The DIS flow the camera model needs (MotionConfig.dis_finest_scale, dis_patch_stride and
# dis_gradient_iterations): pyramid level, spacing of the 8 px patches there, and each patch's
# gradient-descent steps.
CAMERA_FINEST_SCALE = 1
CAMERA_PATCH_STRIDE = 8
CAMERA_GRADIENT_ITERATIONS = 6

# Flow vectors fed to the global-vector median: about this many, on a regular grid of the field.
_MEDIAN_VECTORS = 1024


def _mean_length(flow: np.ndarray) -> float:
    """Mean length of a flow field's vectors, in pixels: the same for the same field in any process.

    Not cv2.magnitude: its optimised (IPP) path rounds some lengths differently by where in memory
    its inputs lie (cv2.split's fresh arrays land anywhere), so the same clip's motion differed in
    its 8th to 11th digit from call to call and process to process. Each float32 product, sum and
    square root here rounds the same wherever the data is.
    """
    x, y = flow[..., 0], flow[..., 1]
    return float(np.sqrt(x * x + y * y).mean(dtype=np.float64))


def _global_vector(flow: np.ndarray) -> np.ndarray:
    """Median (dx, dy) of a flow field: the camera's motion, robust to moving objects.

    A median over a regular grid of the vectors estimates it as well as all of them, at a fraction
    of the sort (np.median over every vector cost more than the flow itself).
    """
    h, w = flow.shape[:2]
    step = max(1, int(np.sqrt(h * w / _MEDIAN_VECTORS)))
    if step > 1:
        flow = cv2.resize(flow, (-(-w // step), -(-h // step)), interpolation=cv2.INTER_NEAREST)
    vectors = flow.reshape(-1, 2)
    lo, hi = (vectors.shape[0] - 1) // 2, vectors.shape[0] // 2
    ordered = np.partition(vectors, (lo, hi), axis=0)
    median: np.ndarray = 0.5 * (ordered[lo] + ordered[hi])
    return median


class MotionScorer:
    """Scores ClipFrames; one instance per worker (the DIS object is reused)."""

    def __init__(self, cfg: MotionConfig, camera: CameraConfig | None = None) -> None:
        self.cfg = cfg
        if camera is not None and camera.enabled and cfg.method == "codec_mvs":
            raise ValueError("camera motion needs dense flow: score.motion.method dis or farneback")
        self._camera = CameraEstimator(camera) if camera is not None and camera.enabled else None
        self._dis = cv2.DISOpticalFlow.create(_DIS_PRESETS[cfg.dis_preset]) if cfg.method == "dis" else None
        finest, stride, steps = cfg.dis_finest_scale, cfg.dis_patch_stride, cfg.dis_gradient_iterations
        if self._camera is not None:
            finest = CAMERA_FINEST_SCALE if finest is None else finest
            stride = CAMERA_PATCH_STRIDE if stride is None else stride
            steps = CAMERA_GRADIENT_ITERATIONS if steps is None else steps
        if self._dis is not None:
            for value, setter in (
                (finest, self._dis.setFinestScale),
                (stride, self._dis.setPatchStride),
                (steps, self._dis.setGradientDescentIterations),
            ):
                if value is not None:
                    setter(value)
        # DIS reads a flow field passed in as candidate vectors at every pyramid level (a zero field: a
        # static candidate for every patch). The preset's own settings, the motion-only scores, were
        # measured with a zero field passed and keep it (dropping it changes them); the camera's finer
        # flow takes none, which saves ~15% of its time (its labels were measured that way).
        self._zero_candidates = finest is None and stride is None and steps is None

    def __call__(self, clip: ClipFrames) -> MotionScores:
        """The motion scores of one clip."""
        return self.measure(clip)[0]

    def measure(self, clip: ClipFrames) -> tuple[MotionScores, CameraScores | None]:
        """Motion scores, and the camera scores when the scorer was given a camera config."""
        if self.cfg.method == "codec_mvs":
            if clip.codec_motion is None:
                raise ValueError("motion.method is codec_mvs but the clip was decoded without motion vectors")
            diag = float(np.hypot(clip.width, clip.height))
            motion = self._summarise(
                clip.codec_motion.magnitude_px / diag, [clip.codec_motion.global_px / diag]
            )
            return motion, None
        magnitudes: list[float] = []
        global_runs: list[np.ndarray] = []
        flows: list[np.ndarray] = []
        # A clip decoded with a run at every sampled frame is scored on `points` of them, as if the
        # decode had been asked for only those (decode_clip's motion_points).
        chosen = spread_indices(len(clip.motion_runs), self.cfg.points)
        runs = tuple(clip.motion_runs[i] for i in chosen)
        for run in runs:
            diag = float(np.hypot(run.shape[2], run.shape[1]))
            run_globals = []
            for prev, nxt in itertools.pairwise(run):
                flow = self._flow(prev, nxt)
                magnitudes.append(_mean_length(flow) / diag)
                run_globals.append(_global_vector(flow) / diag)
                flows.append(flow)
            global_runs.append(np.asarray(run_globals))
        motion = self._summarise(np.asarray(magnitudes), global_runs)
        if self._camera is None:
            return motion, None
        if not runs:  # nothing to fit: classify says why
            return motion, self._camera.classify(PairModels.empty())
        # A run's frames are consecutive: the texture of its first frame serves all its pairs.
        strengths, luma = self._camera.texture([run[0] for run in runs])
        pairs = [run.shape[0] - 1 for run in runs]
        unseen = self._camera.visibility_error(luma, strengths, pairs)
        if unseen is not None:
            return motion, CameraScores.unmeasured(unseen)
        times = [clip.motion_run_times_s[i].tolist() for i in chosen]
        seconds = np.array([b - a for run_times in times for a, b in itertools.pairwise(run_times)])
        pair_run = np.array([r for r, n in enumerate(pairs) for _ in range(n)])
        return motion, self._camera.classify(self._camera.fit(flows, seconds, pair_run, strengths))

    def flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Dense flow (h, w, 2), in pixels, from grey frame `prev` to `nxt` with the configured method
        (dis or farneback): what curate.vbench's motion smoothness and dynamic degree read."""
        return self._flow(prev, nxt)

    def _flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self._dis is None:
            # Farneback with flags=0 only writes the field it is given.
            flow = np.zeros((*prev.shape, 2), np.float32)
            return cv2.calcOpticalFlowFarneback(prev, nxt, flow, 0.5, 3, 15, 3, 5, 1.2, 0)
        if self._zero_candidates:
            zero_seeded: np.ndarray = self._dis.calc(prev, nxt, np.zeros((*prev.shape, 2), np.float32))
            return zero_seeded
        fresh: np.ndarray = self._dis.calc(prev, nxt, None)  # type: ignore[call-overload]  # stubs omit None: a new field
        return fresh

    def _summarise(self, magnitudes: np.ndarray, global_runs: list[np.ndarray]) -> MotionScores:
        if magnitudes.size == 0:
            # A one-frame clip has no motion to measure: it is still by definition.
            return MotionScores(motion=0.0, motion_max=0.0, is_still=True, camera_shake=0.0)
        jumps = [np.hypot(*np.diff(g, axis=0).T) for g in global_runs if len(g) >= 2]
        shake = float(np.mean(np.concatenate(jumps))) if jumps else 0.0
        motion = float(np.mean(magnitudes))
        return MotionScores(
            motion=motion,
            motion_max=float(np.max(magnitudes)),
            is_still=motion < self.cfg.still_threshold,
            camera_shake=shake,
        )
