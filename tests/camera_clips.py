"""Test footage with known camera moves: real photographs (scikit-image's) warped by a camera path.

Every move is given in the conventions of curate/camera.py: content shift in frame fractions per
second (+x = the content moves right, +y = down), zoom as log scale per second (> 0 = the content
grows), roll in radians per second, shake as the standard deviation of a smoothed random offset in
frame fractions. Out-of-photo areas reflect the photo, so the plane the camera films is rigid and
textured everywhere. An optional object (a patch of another photograph) moves across the frame on
its own, over whatever the camera does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import skimage.data
from score_clips import encode_mp4

WIDTH, HEIGHT, FPS = 256, 144, 25


@dataclass(frozen=True)
class Move:
    label: str
    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 0.0
    roll: float = 0.0
    shake: float = 0.0


@dataclass(frozen=True)
class MovingObject:
    photo: str
    size: float  # side of the square patch, fraction of the frame height
    velocity: tuple[float, float]  # frame fractions per second
    start: tuple[float, float] = (0.2, 0.5)  # centre at the first frame, frame fractions


def photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _shake_path(frames: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(frames, 2) offsets in frame fractions: white noise smoothed over ~1.5 frames, std `sigma`."""
    raw = rng.normal(size=(frames + 8, 2))
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    smooth = np.stack([np.convolve(raw[:, i], kernel / kernel.sum(), mode="same") for i in (0, 1)], axis=1)
    smooth = smooth[4 : 4 + frames]
    return sigma * smooth / smooth.std(axis=0)


def render(
    photo_name: str,
    move: Move,
    *,
    frames: int = 50,
    noise: float = 0.0,
    obj: MovingObject | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """RGB frames (HEIGHT x WIDTH) of the camera `move` over a photograph, plus sensor noise (std, grey levels)."""
    rng = np.random.default_rng(seed)
    image = photo(photo_name)
    ph, pw = image.shape[:2]
    base = max(WIDTH / (0.6 * pw), HEIGHT / (0.6 * ph))
    shake = _shake_path(frames, move.shake, rng) if move.shake else np.zeros((frames, 2))
    patch = None
    if obj is not None:
        side = max(8, round(obj.size * HEIGHT))
        source = photo(obj.photo)
        sh, sw = source.shape[:2]
        crop = source[sh // 4 : sh // 4 + min(sh, sw) // 2, sw // 4 : sw // 4 + min(sh, sw) // 2]
        patch = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    out = []
    # A zoom ends (zoom in) or starts (zoom out) at `base`: never magnified past the photo's own
    # resolution, where the picture would blur and the flow with it.
    top = max(move.zoom, 0.0) * (frames - 1) / FPS
    for i in range(frames):
        t = i / FPS
        s = base * np.exp(move.zoom * t - top)
        angle = move.roll * t
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        linear = s * rot
        offset = np.array([WIDTH / 2, HEIGHT / 2]) + np.array(
            [(move.shift[0] * t + shake[i, 0]) * WIDTH, (move.shift[1] * t + shake[i, 1]) * HEIGHT]
        )
        matrix = np.hstack([linear, (offset - linear @ np.array([pw / 2, ph / 2]))[:, None]])
        frame = cv2.warpAffine(
            image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        if patch is not None and obj is not None:
            _paste(frame, patch, obj.start[0] + obj.velocity[0] * t, obj.start[1] + obj.velocity[1] * t)
        if noise:
            frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        out.append(frame)
    return out


def _paste(frame: np.ndarray, patch: np.ndarray, cx: float, cy: float) -> None:
    side = patch.shape[0]
    x0, y0 = round(cx * WIDTH - side / 2), round(cy * HEIGHT - side / 2)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(WIDTH, x0 + side), min(HEIGHT, y0 + side)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]


def clip(photo_name: str, move: Move, *, crf: int = 23, **kw) -> bytes:
    """The rendered move as H.264 MP4 bytes at FPS."""
    return encode_mp4(render(photo_name, move, **kw), fps=FPS, crf=crf)


# Known moves at several speeds: pans in frame fractions per second, zooms in log scale per second.
SPEEDS = (0.06, 0.15, 0.4)
ZOOMS = (0.1, 0.25, 0.5)


def labelled_moves() -> list[Move]:
    moves = [Move("static")]
    for v in SPEEDS:
        moves += [
            Move("pan_left", shift=(v, 0.0)),
            Move("pan_right", shift=(-v, 0.0)),
            Move("tilt_up", shift=(0.0, v)),
            Move("tilt_down", shift=(0.0, -v)),
        ]
    for k in ZOOMS:
        moves += [Move("zoom_in", zoom=k), Move("zoom_out", zoom=-k)]
    moves += [
        Move("shaky", shake=0.01),
        Move("shaky", shake=0.025),
        Move("shaky", shift=(0.05, 0.0), shake=0.02),
        Move("complex", shift=(0.2, 0.2)),  # diagonal
        Move("complex", shift=(-0.15, 0.0), zoom=0.4),  # pan while zooming
        Move("complex", roll=0.4),  # roll
    ]
    return moves
