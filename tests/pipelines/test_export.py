"""`reelforge export`: every format read back with its users' library and compared clip by clip with the
store; undecodable clips become error rows; a killed export resumes to the same bytes; an occupied
output folder is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.export import ERRORS, MANIFEST, ExportError, export
from pipelines.export_config import ExportConfig
from store import CLIPS, Store
from store.placeholders import PLACEHOLDER_KEY, mark_placeholders
from tests.caption_clips import clips_rows, photo_clips

REPO = Path(__file__).resolve().parents[2]
BROKEN, UNCAPTIONED = "broken-truncated", "clip0-coffee"


def _caption(clip_id: str) -> str:
    return f"a slow pan over {clip_id.split('-')[-1]}, seen from {clip_id}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Real H.264 clips, one truncated (its moov box is gone: it does not open), one without a caption,
    captions marked as placeholders like the demo's."""
    clips = photo_clips(copies=2)
    good = clips["clip0-astronaut"]
    clips[BROKEN] = good[: len(good) // 2]
    store = Store(tmp_path_factory.mktemp("export") / "store")
    store.append(CLIPS, clips_rows(clips))
    ids = list(clips)
    captions = pa.table({"clip_id": ids, "caption": [None if c == UNCAPTIONED else _caption(c) for c in ids]})
    store.add_columns(captions, "caption", {}, {"vlm": {"placeholder": True}})
    mark_placeholders(store)
    return store


def _store_clips(store: Store) -> dict[str, bytes]:
    ids = store.read_clips(["clip_id"]).column("clip_id").to_pylist()
    return store.read_clip_bytes(ids)


def _errors(out: Path) -> dict[str, str]:
    lines = (out / ERRORS).read_text().splitlines()
    return {json.loads(line)["clip_id"]: json.loads(line)["error"] for line in lines}


def _check_errors(out: Path) -> None:
    errors = _errors(out)
    assert set(errors) == {BROKEN, UNCAPTIONED}
    assert errors[BROKEN].startswith("does not decode")
    assert errors[UNCAPTIONED].startswith("no caption")


def test_webdataset_shards_read_back_with_webdataset(store, tmp_path):
    import webdataset as wds

    out = tmp_path / "wds"
    summary = export(store, out, ExportConfig(format="webdataset", shard_bytes=30_000))
    expected = _store_clips(store)
    assert (summary.exported, summary.failed) == (len(expected) - 2, 2)
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert len(shards) > 1, "small shard_bytes must give several shards"
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for sample in samples:
        meta = json.loads(sample["json"])
        assert sample["mp4"] == expected[meta["clip_id"]], "clip bytes must be carried unchanged"
        assert sample["txt"].decode() == _caption(meta["clip_id"]) == meta["caption"]
        assert meta["width"] == 160 and meta["num_frames"] == 24
    assert {json.loads(s["json"])["clip_id"] for s in samples} == set(expected) - {BROKEN, UNCAPTIONED}
    _check_errors(out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["placeholder_columns"] == {"caption": "caption/vlm"}


@pytest.mark.parametrize("video", ["inline", "path"])
def test_parquet_reads_back_with_pyarrow(store, tmp_path, video):
    out = tmp_path / f"parquet-{video}"
    cfg = ExportConfig(
        format="parquet", parquet_video=video, parquet_file_bytes=20_000, parquet_row_group_clips=2
    )
    export(store, out, cfg)
    assert len(list((out / "data").glob("part-*.parquet"))) > 1
    table = pq.read_table(out / "data")
    expected = _store_clips(store)
    assert table.num_rows == len(expected) - 2
    assert table.column("key").to_pylist() == sorted(table.column("key").to_pylist())
    for row in table.to_pylist():
        data = row["video"] if video == "inline" else (out / row["video_path"]).read_bytes()
        assert data == expected[row["clip_id"]]
        assert row["caption"] == _caption(row["clip_id"])
    # the placeholder mark travels with the column: a reader of the parquet sees the captions are random
    assert table.schema.field("caption").metadata[PLACEHOLDER_KEY.encode()] == b"caption/vlm"
    _check_errors(out)


def test_folder_metadata_jsonl_reads_back_with_datasets(store, tmp_path):
    import datasets

    out = tmp_path / "folder"
    export(store, out, ExportConfig(format="folder", folder_layout="metadata_jsonl", blob_batch=3))
    loaded = datasets.load_dataset("videofolder", data_dir=str(out), split="train")
    loaded = loaded.cast_column("video", datasets.Video(decode=False))
    expected = _store_clips(store)
    assert len(loaded) == len(expected) - 2
    for row in loaded:
        assert Path(row["video"]["path"]).read_bytes() == expected[row["clip_id"]]
        assert row["text"] == _caption(row["clip_id"])
    _check_errors(out)


def test_folder_prompts_and_videos_txt(store, tmp_path):
    out = tmp_path / "txt"
    export(store, out, ExportConfig(format="folder", folder_layout="prompts_txt"))
    prompts = (out / "prompts.txt").read_text().splitlines()
    videos = (out / "videos.txt").read_text().splitlines()
    expected = _store_clips(store)
    assert len(prompts) == len(videos) == len(expected) - 2
    # the copies of one photo's clip have equal bytes: a line pair must match one of them
    pairs = {(_caption(clip_id), data) for clip_id, data in expected.items()}
    for prompt, video in zip(prompts, videos, strict=True):
        assert (prompt, (out / video).read_bytes()) in pairs
    assert len(set(prompts)) == len(prompts)


def test_filter_selects_clips(store, tmp_path):
    out = tmp_path / "filtered"
    summary = export(store, out, ExportConfig(format="parquet", filter="clip_id LIKE 'clip1-%'"))
    ids = pq.read_table(out / "data").column("clip_id").to_pylist()
    assert sorted(ids) == sorted(c for c in _store_clips(store) if c.startswith("clip1-"))
    assert summary.failed == 0


def test_interrupted_export_resumes_to_the_same_bytes(store, tmp_path):
    cfg = ExportConfig(format="webdataset", shard_bytes=20_000, blob_batch=2)
    clean = tmp_path / "clean"
    export(store, clean, cfg)

    class Killed(Exception):
        pass

    def stop_at(n: int) -> None:
        if n == 5:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        export(store, out, cfg, on_clip=stop_at)
    assert not json.loads((out / MANIFEST).read_text())["complete"]
    with pytest.raises(ExportError, match="--resume continues it"):
        export(store, out, cfg)
    summary = export(store, out, cfg, resume=True)
    assert summary.skipped > 0
    _assert_same_files(clean, out)


def _assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.name != MANIFEST)
    assert names == sorted(p.name for p in b.iterdir() if p.name != MANIFEST)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_occupied_folders_are_refused(store, tmp_path):
    out = tmp_path / "taken"
    export(store, out, ExportConfig(format="parquet"))
    with pytest.raises(ExportError, match="holds another export"):
        export(store, out, ExportConfig(format="parquet"))
    with pytest.raises(ExportError, match="format='parquet'"):
        export(store, out, ExportConfig(format="webdataset"), resume=True)
    done = export(store, out, ExportConfig(format="parquet"), resume=True)
    assert done.exported == 0 and done.skipped == len(_store_clips(store))
    replaced = export(store, out, ExportConfig(format="webdataset"), overwrite=True)
    assert replaced.exported > 0 and not (out / "data").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds no reelforge export"):
        export(store, foreign, ExportConfig(), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_export_and_refusal(store, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["export", "--root", str(store.root), "--format", "folder", str(out)]
    assert main(args) == 0
    assert "2 clips failed" in capsys.readouterr().out
    assert main(args) == 2
    assert "--resume continues it" in capsys.readouterr().err
    assert main([*args[:-1], "--set", "export.verify=sideways", str(tmp_path / "x")]) == 2
    assert "export.verify" in capsys.readouterr().err
    assert main([*args[:-1], "--filter", "no_such_column > 1", str(tmp_path / "y")]) == 2
    assert "does not apply to clips" in capsys.readouterr().err and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_killed_cli_export_resumes(store, tmp_path):
    """SIGKILL in the middle of a run (not an exception the exporter sees), then --resume."""
    cfg = ["--set", "export.shard_bytes=40000", "--set", "export.blob_batch=1"]
    clean = tmp_path / "clean"
    export(store, clean, ExportConfig(shard_bytes=40_000, blob_batch=1))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pipelines.cli", "export", "--root", str(store.root), *cfg, str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.tar")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((out / MANIFEST).read_text())
    if manifest["complete"]:
        pytest.fail("the export finished before the kill: make it longer")
    assert subprocess.run([*command, "--resume"], env=env, cwd=REPO).returncode == 0
    _assert_same_files(clean, out)


MEASURE = """
import json, sys
from pathlib import Path
from pipelines.export import export
from pipelines.export_config import ExportConfig
from store import Store

def status_kb(key):
    # VmHWM is this process's own peak: ru_maxrss would carry the parent's peak across fork and exec
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1])

base = status_kb("VmRSS")
cfg = ExportConfig(format=sys.argv[3], verify="none", scan_rows=2048, shard_bytes=1 << 20)
summary = export(Store(sys.argv[1]), Path(sys.argv[2]), cfg)
print(json.dumps({"rows": summary.attempted, "cost_mb": (status_kb("VmHWM") - base) / 1024}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_export_memory_does_not_grow_with_the_clips(tmp_path, fmt):
    """Peak resident size over the one after the imports of an export of 1,000 and of 20,000 synthetic 16 KB clips (320 MB of
    clip bytes), each in a fresh process: the scan batch, a blob batch and a unit's buffers are all it
    holds."""
    from tests.synthetic_store import make_store

    def cost(n: int) -> dict:
        store = make_store(tmp_path / f"store{n}", n, clips_per_fragment=500, embed_dim=16, blob_bytes=16_384)
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(store.root), str(tmp_path / f"out{n}"), fmt],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    few, many = cost(1_000), cost(20_000)
    print(f"export {fmt}: +{few['cost_mb']:.0f} MB at 1,000 clips, +{many['cost_mb']:.0f} MB at 20,000")
    assert few["rows"] == 1_000 and many["rows"] == 20_000
    assert many["cost_mb"] - few["cost_mb"] < 64, "320 MB of clips went through"
