"""Bad command-line input: a one-line error naming the problem, a non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import lance
import pytest

from pipelines.cli import main
from store import CLIPS_SCHEMA, VIDEOS_SCHEMA, Store

from .corpus import encode_h264, shot_frames


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line(err: str, command: str, *must_name: str) -> None:
    assert err.startswith(f"reelforge {command}: "), err
    assert "\n" not in err, err
    assert "Traceback" not in err
    for part in must_name:
        assert part in err, (part, err)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture(scope="module")
def one_video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one_video")
    encode_h264(folder / "clip.mp4", shot_frames(21, shots=1))
    return folder / "clip.mp4"


def test_missing_input(tmp_path, capsys):
    root = tmp_path / "store"
    code, err = run(capsys, "split", "--root", str(root), str(tmp_path / "no such file.mp4"))
    assert code != 0
    assert_one_line(err, "split", "not found", "no such file.mp4")
    assert not root.exists()


def test_empty_input_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    root = tmp_path / "store"
    code, err = run(capsys, "split", "--root", str(root), str(empty))
    assert code != 0
    assert_one_line(err, "split", "no video files", str(empty))
    assert not root.exists()


def test_glob_matching_nothing(tmp_path, capsys):
    root = tmp_path / "store"
    code, err = run(capsys, "split", "--root", str(root), str(tmp_path / "*.mp4"))
    assert code != 0
    assert_one_line(err, "split", "no video files")
    assert not root.exists()


def test_unwritable_output(tmp_path, capsys, one_video):
    # Tests run as root, where permissions do not stop a write: a path under a regular file does.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    root = blocker / "store"
    code, err = run(capsys, "split", "--root", str(root), str(one_video))
    assert code != 0
    assert_one_line(err, "split", str(blocker))
    assert blocker.read_text() == "not a folder"


def test_score_before_split(tmp_path, capsys):
    root = tmp_path / "store"
    code, err = run(capsys, "score", "--root", str(root))
    assert code != 0
    assert_one_line(err, "score", "no clips table", "split")
    assert tree(tmp_path) == []


@pytest.fixture
def other_schema_store(tmp_path) -> Store:
    """A store whose datasets were written by a reelforge with another schema version."""
    store = Store(tmp_path / "old_store")
    for schema, uri in ((VIDEOS_SCHEMA, store.videos_uri), (CLIPS_SCHEMA, store.clips_uri)):
        old = schema.with_metadata({b"reelforge.schema_version": b"0"})
        lance.write_dataset(old.empty_table(), uri, schema=old)
    return store


@pytest.mark.parametrize("command", ["split", "score", "filter"])
def test_dataset_of_another_schema_version(other_schema_store, capsys, one_video, command):
    root = other_schema_store.root
    before = tree(root)
    args = [command, "--root", str(root)] + ([str(one_video)] if command == "split" else [])
    code, err = run(capsys, *args)
    assert code != 0
    assert_one_line(err, command, "schema version 0", "clips.lance" if command != "split" else ".lance")
    assert tree(root) == before


def test_bad_config_value_names_the_key(tmp_path, capsys, one_video):
    root = tmp_path / "store"
    code, err = run(
        capsys, "split", "--root", str(root), "--set", "split.clips.min_length_s=-1", str(one_video)
    )
    assert code != 0
    assert "split.clips.min_length_s" in err and "Traceback" not in err
    assert not root.exists()
