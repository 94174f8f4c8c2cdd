"""Probe: container facts of real and generated files, and a specific reason for every bad input."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from curate.probe import Reason, content_id, is_variable_rate, probe_file, reason_of
from curate.split_config import ProbeConfig

CFG = ProbeConfig()


def test_video_id_is_the_content_hash(tmp_path, sample_footage):
    copy = tmp_path / "same bytes, other name.mp4"
    shutil.copyfile(sample_footage / "cuts.mp4", copy)
    a = probe_file(sample_footage / "cuts.mp4", CFG)
    b = probe_file(copy, CFG)
    assert a.video_id == b.video_id == content_id(copy, 4096)[0]
    assert a.video_id != probe_file(sample_footage / "looks.mp4", CFG).video_id


def test_sample_footage_probes_like_its_ground_truth(sample_footage):
    import json

    for video in sorted(sample_footage.glob("*.mp4")) + sorted(sample_footage.glob("*.webm")):
        truth = json.loads(Path(f"{video}.gt.json").read_text())
        probe = probe_file(video, CFG)
        assert probe.ok, probe.error
        assert (probe.width, probe.height) == (truth["width"], truth["height"])
        assert probe.nominal_fps == pytest.approx(truth["nominal_fps"], rel=1e-3)
        assert probe.is_vfr == truth["variable_frame_rate"], video.name
        assert probe.rotation == 0 and not probe.has_audio


def test_vfr_needs_more_than_timestamp_rounding():
    assert not is_variable_rate([33, 34, 33, 33, 34] * 10, 0.05)  # 29.97 fps in a 1/1000 time base
    assert is_variable_rate([1001, 2002, 1001, 1001, 2002] * 10, 0.05)  # every third frame dropped
    assert not is_variable_rate([512] * 30, 0.05)


def test_every_generated_bad_input_gets_its_specific_reason(bad_inputs):
    for name, (path, accepted) in bad_inputs.items():
        probe = probe_file(path, CFG)
        if "ok" in accepted and probe.ok:
            continue
        assert not probe.ok, name
        assert reason_of(probe.error) in accepted, (name, probe.error)
        assert probe.error.split(": ", 1)[1], "the reason carries a detail"


def _probe_error_as_unprivileged_user(path: Path) -> str:
    """`probe_file(path).error` as a user that file permissions apply to: this process when it is one,
    else a forked child that drops root to `nobody` before probing (root reads any file, whatever its
    mode, and CI runs as root)."""
    if os.geteuid() != 0:
        return probe_file(path, CFG).error or ""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Lance warns on every fork of a process that imported it; the child only probes with PyAV.
        warnings.filterwarnings("ignore", message="lance is not fork-safe")
        pid = os.fork()
    if pid == 0:  # the child writes the error to the pipe and exits, never returning into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write_end, (probe_file(path, CFG).error or "").encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        error = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged probe failed"
    return error


def test_directory_and_unreadable_file(tmp_path, sample_footage):
    assert reason_of(probe_file(tmp_path, CFG).error) == Reason.NOT_A_FILE
    # A folder every user can enter (pytest's tmp_path is private to its owner), holding a file with
    # no read permission: `nobody` finds it and may not read it.
    with tempfile.TemporaryDirectory(prefix="rf-unreadable-") as folder:
        Path(folder).chmod(0o755)
        locked = Path(folder) / "locked.mp4"
        shutil.copyfile(sample_footage / "cuts.mp4", locked)
        locked.chmod(0)
        error = _probe_error_as_unprivileged_user(locked)
        assert reason_of(error) == Reason.UNREADABLE, error


def test_header_claiming_a_huge_frame_is_refused_before_decoding(sample_footage):
    probe = probe_file(sample_footage / "cuts.mp4", ProbeConfig(max_pixels=100 * 100))
    assert reason_of(probe.error) == Reason.INVALID_FRAME_SIZE and "320x180" in probe.error


@pytest.mark.footage
def test_shared_formats_probe(shared_footage):
    files = sorted((shared_footage / "formats").iterdir())
    assert len(files) >= 10
    probes = {f.name: probe_file(f, CFG) for f in files}
    for name, probe in probes.items():
        assert probe.ok, (name, probe.error)
        assert probe.width > 0 and probe.height > 0 and probe.nominal_fps > 0, name
    assert probes["video_90.mov"].rotation == 90
    assert probes["video_270.mov"].rotation == 270
    assert (probes["bear-vp9-odd-dimensions.webm"].width, probes["bear-vp9-odd-dimensions.webm"].height) == (
        161,
        121,
    )
    assert probes["sample_av1.mp4"].codec in ("libdav1d", "av1", "libaom-av1")
    assert probes["sample_h265.ts"].container == "mpegts" and probes["sample_h265.ts"].codec == "hevc"
    assert probes["no_duration.webm"].duration_s == 0.0  # measured later by the split pass
    assert probe_file(shared_footage / "multishot" / "issue-134-rotate.mp4", CFG).rotation == 90


@pytest.mark.footage
def test_shared_vfr_and_broken(shared_footage):
    vfr = probe_file(shared_footage / "multishot" / "goldeneye-vfr-drop3.mp4", CFG)
    assert vfr.is_vfr and vfr.avg_fps == pytest.approx(16.05, abs=0.1)
    assert not probe_file(shared_footage / "multishot" / "testvideo.mp4", CFG).is_vfr
    bad = probe_file(shared_footage / "broken" / "invalid-bitstream.webm", CFG)
    assert reason_of(bad.error) == Reason.UNDECODABLE and "51 of 51 packets" in bad.error
    # Decodable prefixes probe fine; the split pass keeps what decodes.
    assert probe_file(shared_footage / "broken" / "corrupted.mp4", CFG).ok
    assert probe_file(shared_footage / "broken" / "sample_mdat_too_long.mp4", CFG).ok
