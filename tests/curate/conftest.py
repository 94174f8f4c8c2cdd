"""Generated bad inputs for the split stage: each file with the reason its videos row must give."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from media import remux
from tests.reliability.corpus import encode_audio_only


def write_bad_inputs(out: Path, good_video: Path) -> dict[str, tuple[Path, set[str]]]:
    """{name: (path, reasons accepted)}: every kind of file a real archive throws at the splitter."""
    out.mkdir(parents=True, exist_ok=True)
    data = good_video.read_bytes()
    rng = np.random.default_rng(0)
    cases: dict[str, tuple[Path, set[str]]] = {}

    def add(name: str, content: bytes | None, reasons: set[str]) -> Path:
        path = out / name
        if content is not None:
            path.write_bytes(content)
        cases[name] = (path, reasons)
        return path

    add("zero bytes.mp4", b"", {"empty_file"})
    add("random-bytes.mp4", rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(), {"not_a_media_file"})
    add("notes.mkv", b"this is a text file, not a video\n" * 100, {"not_a_media_file"})
    # The moov box of the sample MP4s is at the end: cutting the file loses the index.
    add("truncated-50%.mp4", data[: len(data) // 2], {"not_a_media_file", "truncated"})
    add("truncated-header.mp4", data[:2000], {"not_a_media_file", "truncated"})
    faststart = out / "faststart.mp4"
    remux(good_video, faststart, container_options={"movflags": "+faststart"})
    cut = faststart.read_bytes()
    faststart.unlink()
    # With the index first, a cut file still has decodable frames: partial clips plus a reason.
    add("truncated-60% faststart.mp4", cut[: len(cut) * 6 // 10], {"truncated", "ok"})
    audio = out / "audio only.m4a"
    encode_audio_only(audio)
    cases[audio.name] = (audio, {"no_video_stream"})
    link = out / "dangling $link;.mp4"
    os.symlink(out / "does-not-exist.mp4", link)
    cases[link.name] = (link, {"file_missing"})
    cases["missing.mp4"] = (out / "missing.mp4", {"file_missing"})
    return cases


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory, sample_footage) -> dict[str, tuple[Path, set[str]]]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad inputs ü"), sample_footage / "cuts.mp4")
