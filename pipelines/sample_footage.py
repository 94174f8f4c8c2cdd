"""Built-in sample footage: short videos made from the photographs scikit-image ships, with ground truth.

Camera moves (pans, zooms, shakes) over real photos give real image statistics and exactly known shot
boundaries. The set covers what the stages must tell apart: hard cuts, one cross-dissolve, a static shot,
a fast pan, a blurred shot, a very dark shot, a shot with large on-screen text, H.264 MP4 at 25 fps, one
file in another container/codec (VP9 in WebM) and one with a variable frame rate. It is the demo's default
input and the tests' main fixture. Output is deterministic (seeded motion, single-threaded encoders).

Each `<file>.gt.json` lists, in decoding order, the shots (label, first/last frame, seconds, what the
shot is: motion, look, photo), `cuts` (first frame index of each new shot after a hard cut, as in
../shared/footage), `cuts_s`, and `transitions` (gradual changes with their frame span).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import skimage.data

from media import VideoWriter

WIDTH, HEIGHT, FPS = 320, 180, 25


@dataclass(frozen=True)
class Shot:
    """One shot of a sample video: its photograph, length, motion and look."""

    label: str
    photo: str  # a skimage.data function name
    frames: int
    motion: str  # "static" | "pan" | "fast_pan" | "zoom" | "shake"
    look: str = "normal"  # "normal" | "blurred" | "dark" | "text"


@dataclass(frozen=True)
class Movie:
    """One sample video: its shots, codec, dissolves and frame durations."""

    name: str
    shots: tuple[Shot, ...]
    codec: Literal["libx264", "libvpx-vp9"] = "libx264"  # the video encoders the demo footage uses
    # frames of cross-dissolve between shot i and i+1, by i (0 = hard cut)
    dissolves: dict[int, int] = field(default_factory=dict)
    # per-frame durations in 1/FPS units, cycled over the shot index (a variable-frame-rate file)
    frame_steps: dict[int, tuple[int, ...]] = field(default_factory=dict)


OVERLAY_TEXT = ("BREAKING NEWS", "REELFORGE 2026")

MOVIES = (
    Movie(
        "cuts.mp4",
        (
            Shot("pan_astronaut", "astronaut", 50, "pan"),
            Shot("static_coffee", "coffee", 50, "static"),
            Shot("fast_pan_chelsea", "chelsea", 50, "fast_pan"),
            Shot("zoom_rocket", "rocket", 50, "zoom"),
            Shot("shake_immunohistochemistry", "immunohistochemistry", 50, "shake"),
        ),
    ),
    Movie(
        "looks.mp4",
        (
            Shot("pan_coffee", "coffee", 60, "pan"),
            Shot("blurred_astronaut", "astronaut", 60, "pan", "blurred"),
            Shot("dark_chelsea", "chelsea", 50, "pan", "dark"),
            Shot("text_rocket", "rocket", 50, "static", "text"),
        ),
        dissolves={0: 20},
    ),
    Movie(
        "vp9.webm",
        (
            Shot("pan_hubble", "hubble_deep_field", 40, "pan"),
            Shot("zoom_colorwheel", "colorwheel", 40, "zoom"),
        ),
        codec="libvpx-vp9",
    ),
    Movie(
        "vfr.mp4",
        (
            Shot("pan_retina", "retina", 45, "pan"),
            Shot("pan_astronaut_vfr", "astronaut", 45, "pan"),
            Shot("static_rocket_vfr", "rocket", 40, "static"),
        ),
        # shot 0 at 25 fps, shot 1 alternating 1 and 2 frame periods (~16.7 fps), shot 2 at 12.5 fps
        frame_steps={0: (1,), 1: (1, 2), 2: (2,)},
    ),
)


def _photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _camera(shot: Shot, rng: np.random.Generator) -> Callable[[float], tuple[float, float, float]]:
    """(centre x, centre y, zoom) of the view at progress p in [0, 1], in photo-relative units."""
    if shot.motion == "static":
        return lambda p: (0.5, 0.5, 1.0)
    if shot.motion == "pan":
        return lambda p: (0.35 + 0.3 * p, 0.5, 1.0)
    if shot.motion == "fast_pan":
        return lambda p: (0.2 + 0.6 * p, 0.45 + 0.1 * p, 1.0)
    if shot.motion == "zoom":
        return lambda p: (0.5, 0.5, 1.0 + 0.8 * p)
    if shot.motion == "shake":
        jitter = rng.normal(0.0, 0.012, size=(shot.frames + 1, 2))
        return lambda p: (
            0.5 + jitter[round(p * shot.frames), 0],
            0.5 + jitter[round(p * shot.frames), 1],
            1.1,
        )
    raise ValueError(f"unknown motion {shot.motion!r}")


def _render(shot: Shot, rng: np.random.Generator) -> Iterator[np.ndarray]:
    photo = _photo(shot.photo)
    h, w = photo.shape[:2]
    # The view shows ~60% of the photo's shorter extent, leaving room to pan.
    base = max(WIDTH / (0.6 * w), HEIGHT / (0.6 * h))
    camera = _camera(shot, rng)
    for i in range(shot.frames):
        cx, cy, zoom = camera(i / max(shot.frames - 1, 1))
        s = base * zoom
        matrix = np.array([[s, 0, WIDTH / 2 - s * cx * w], [0, s, HEIGHT / 2 - s * cy * h]], dtype=np.float64)
        frame = cv2.warpAffine(
            photo, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT
        )
        yield _apply_look(frame, shot.look)


def _apply_look(frame: np.ndarray, look: str) -> np.ndarray:
    if look == "normal":
        return frame
    if look == "blurred":
        return cv2.GaussianBlur(frame, (0, 0), sigmaX=3.5)
    if look == "dark":
        return (frame.astype(np.float32) * 0.07).astype(np.uint8)
    if look == "text":
        out = frame.copy()
        for row, line in enumerate(OVERLAY_TEXT):
            y = 70 + row * 60
            cv2.rectangle(out, (8, y - 42), (WIDTH - 8, y + 12), (0, 0, 0), thickness=-1)
            cv2.putText(out, line, (16, y), cv2.FONT_HERSHEY_DUPLEX, 1.25, (255, 255, 255), 3, cv2.LINE_AA)
        return out
    raise ValueError(f"unknown look {look!r}")


def _frames(movie: Movie, seed: int) -> Iterator[tuple[np.ndarray, int]]:
    """(RGB frame, shot index of the frame's label) with cross-dissolves blended in."""
    rng = np.random.default_rng(seed)
    rendered = [list(_render(shot, rng)) for shot in movie.shots]
    for k, frames in enumerate(rendered):
        overlap = movie.dissolves.get(k, 0)
        start = movie.dissolves.get(k - 1, 0)  # frames already blended into the previous shot's tail
        body = frames[start : len(frames) - overlap] if overlap else frames[start:]
        for f in body:
            yield f, k
        if overlap:
            tail, head = frames[-overlap:], rendered[k + 1][:overlap]
            for j, (a, b) in enumerate(zip(tail, head, strict=True)):
                alpha = (j + 1) / (overlap + 1)
                mixed = (a.astype(np.float32) * (1 - alpha) + b.astype(np.float32) * alpha).astype(np.uint8)
                yield mixed, k if alpha < 0.5 else k + 1


def write_movie(movie: Movie, out_dir: Path, seed: int = 0) -> dict:
    """Encode one movie and return its ground truth."""
    path = out_dir / movie.name
    time_base = Fraction(1, FPS * 2)
    shots: list[dict] = []
    pts_of_frame: list[int] = []
    shot_of_frame: list[int] = []
    # bitexact: no random segment UIDs or encoder strings, so the same seed gives the same bytes;
    # one encoder thread: single-threaded encoders give byte-identical output run to run
    vp9 = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    writer = VideoWriter(
        WIDTH,
        HEIGHT,
        FPS,
        crf=18,  # crf and preset are x264's; VP9's settings are its codec options
        preset="fast",
        time_base=time_base,
        gop=50,
        path=path,
        codec=movie.codec,
        container=path.suffix.lstrip("."),
        codec_options={"bf": "0"} if movie.codec == "libx264" else vp9,
        container_options={"fflags": "+bitexact"},
    )
    pts, n_in_shot = 0, 0
    last_shot = -1
    for rgb, k in _frames(movie, seed):
        n_in_shot = n_in_shot + 1 if k == last_shot else 0
        last_shot = k
        pts_of_frame.append(pts)
        shot_of_frame.append(k)
        steps = movie.frame_steps.get(k, (1,))
        duration = 2 * steps[n_in_shot % len(steps)]
        writer.add(rgb, pts, duration)
        pts += duration
    writer.finish()

    seconds = [p * float(time_base) for p in pts_of_frame]
    firsts = [i for i in range(len(shot_of_frame)) if i == 0 or shot_of_frame[i] != shot_of_frame[i - 1]]
    for k, shot in enumerate(movie.shots):
        first = firsts[k]
        last = (firsts[k + 1] if k + 1 < len(firsts) else len(shot_of_frame)) - 1
        shots.append(
            {
                **asdict(shot),
                "start_frame": first,
                "end_frame": last,
                "start_s": round(seconds[first], 6),
                "end_s": round(seconds[last] + (seconds[last] - seconds[last - 1]), 6),
            }
        )
    transitions = []
    cuts = []
    for k in range(1, len(movie.shots)):
        overlap = movie.dissolves.get(k - 1, 0)
        if overlap:
            start = firsts[k] - (overlap + 1) // 2
            transitions.append(
                {
                    "kind": "dissolve",
                    "start_frame": start,
                    "end_frame": start + overlap - 1,
                    "start_s": round(seconds[start], 6),
                    "end_s": round(seconds[start + overlap - 1], 6),
                }
            )
        else:
            cuts.append(firsts[k])
    return {
        "file": movie.name,
        "codec": movie.codec,
        "width": WIDTH,
        "height": HEIGHT,
        "nominal_fps": FPS,
        "variable_frame_rate": bool(movie.frame_steps),
        "num_frames": len(shot_of_frame),
        "duration_s": round(shots[-1]["end_s"], 6),
        "cuts": cuts,
        "cuts_s": [round(seconds[c], 6) for c in cuts],
        "transitions": transitions,
        "shots": shots,
        "overlay_text": list(OVERLAY_TEXT),
    }


def write_sample_footage(out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write every sample movie and its `<name>.gt.json` into out_dir; returns the video paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for movie in MOVIES:
        truth = write_movie(movie, out, seed)
        (out / f"{movie.name}.gt.json").write_text(json.dumps(truth, indent=2) + "\n")
        paths.append(out / movie.name)
    return paths


def load_ground_truth(video: str | Path) -> dict:
    """The ground truth written beside a sample video."""
    return json.loads(Path(f"{video}.gt.json").read_text())
