"""Every command run where it cannot work (empty folder, a store after split, score or filter only,
no model weights, no vLLM environment, an engine nobody serves): one line naming what is wrong and what
fixes it, a non-zero exit, and the store exactly as it was. Plus --debug, --version and exit codes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from synthetic_store import make_store

from caption.config import CaptionConfig
from pipelines.cli import main
from pipelines.jobs.caption import CaptionJobError, check_engine
from pipelines.outcome import exit_code

CLIPS = 40


def paths_in(folder: Path) -> list[str]:
    """Every path a command could write, inside `folder` (nothing lands in the checkout)."""
    return [
        "--root",
        str(folder / "store"),
        "--set",
        f"train.out_dir={folder / 'train'}",
        "--set",
        f"train.vae.weights_path={folder / 'vae'}",
        "--set",
        f"train.vae_train.out_dir={folder / 'vae'}",
        "--set",
        f"sample.checkpoint={folder / 'train'}",
        "--set",
        f"sample.out_dir={folder / 'samples'}",
        "--set",
        f"input.paths=[{folder / 'footage'}]",
    ]


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """One folder per state; tests copy the one they run in, so every run starts from the same bytes."""
    base = tmp_path_factory.mktemp("states")
    made = {"empty": base / "empty"}
    made["empty"].mkdir()
    for state, stages in (
        ("split", ()),
        ("score", ("score", "dedup")),
        ("filter", ("score", "dedup", "filter")),
        ("caption", ("score", "dedup", "filter", "caption")),
    ):
        made[state] = base / state
        make_store(made[state] / "store", CLIPS, embed_dim=8, stages=stages)
    return made


def refused(capsys, folder: Path, argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run `argv` in `folder`; assert one line on stderr, nothing on stdout, exit 2, nothing written."""
    before = snapshot(folder)
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        code = main([*argv, *paths_in(folder)])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, err = capsys.readouterr()
    command = argv[0] if argv[0] != "store" else f"store {argv[1]}"
    assert code == 2, (code, out, err)
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"reelforge {command}: "), err
    assert snapshot(folder) == before
    return lines[0]


# (state, command line, words the line must hold: what is wrong and the command or setting that fixes it)
CASES = [
    ("empty", ["probe"], ["input not found", "footage"]),
    ("empty", ["split"], ["input not found", "footage"]),
    ("empty", ["demo", "no-such-footage"], ["input not found", "no-such-footage"]),
    *[
        ("empty", [command], ["no clips table", "reelforge split"])
        for command in ("score", "filter", "caption", "encode", "train-vae", "train", "report")
    ],
    *[
        ("empty", ["store", action], ["no clips table", "reelforge split"])
        for action in ("stats", "compact", "vacuum")
    ],
    ("empty", ["sample"], ["no trained checkpoint", "reelforge train"]),
    ("split", ["filter"], ["'score_error'", "reelforge score"]),
    ("split", ["caption"], ["'selected'", "reelforge filter", "caption.only_selected"]),
    ("split", ["encode"], ["'caption'", "reelforge caption"]),
    ("split", ["train"], ["'caption'", "reelforge caption"]),
    ("split", ["sample"], ["no trained checkpoint", "reelforge train"]),
    ("score", ["caption"], ["'selected'", "reelforge filter"]),
    ("score", ["filter", "--expression", "sharpness > 3"], ["'sharpness'", "reelforge score"]),
    ("score", ["filter", "--expression", "sharpnes > 3"], ["unknown column", "sharpnes"]),
    ("score", ["filter", "--expression", "motion >"], ["motion >"]),
    ("score", ["encode"], ["'caption'", "reelforge caption"]),
    ("score", ["train"], ["'caption'", "reelforge caption"]),
    ("filter", ["encode"], ["'caption'", "reelforge caption"]),
    ("filter", ["train"], ["'caption'", "reelforge caption"]),
    ("filter", ["sample"], ["no trained checkpoint", "reelforge train"]),
    ("filter", ["train", "--set", "train.data.filter=selected and caption_error is null"], ["'caption'"]),
    # without model weights
    (
        "split",
        ["score", "--set", "score.clip.allow_random_weights=false"],
        ["no CLIP weights", "score.clip.checkpoint"],
    ),
    ("caption", ["encode"], ["no video autoencoder", "reelforge train-vae"]),
    ("caption", ["train"], ["no video autoencoder", "reelforge train-vae"]),
    ("caption", ["train", "--set", "train.data.latents=precomputed"], ["no latents", "reelforge encode"]),
    # a caption model folder that is not there
    (
        "filter",
        ["caption", "--set", "caption.model=./no-such-model"],
        ["caption.model ./no-such-model is not a folder"],
    ),
    # a config typo: the key and the allowed ones, on one line
    ("filter", ["report", "--set", "report.thumbnale=3"], ["unknown key 'report.thumbnale'", "thumbnails"]),
]


@pytest.mark.parametrize(("state", "argv", "words"), CASES, ids=[f"{s}-{' '.join(a)}" for s, a, _ in CASES])
def test_refused_in_one_line_with_the_store_unchanged(stores, tmp_path, capsys, state, argv, words):
    folder = tmp_path / state
    shutil.copytree(stores[state], folder)
    line = refused(capsys, folder, argv)
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize("engine", ["openai-launch", "vllm"])
def test_caption_without_the_vllm_environment(stores, tmp_path, capsys, engine):
    folder = tmp_path / "filter"
    shutil.copytree(stores["filter"], folder)
    model = tmp_path / "model"
    model.mkdir()
    settings = ["--set", f"caption.model={model}"] + (
        ["--set", "caption.engine=vllm"]
        if engine == "vllm"
        else ["--set", "caption.openai.launch_server=true"]
    )
    line = refused(
        capsys,
        folder,
        ["caption", *settings],
        env={"REELFORGE_VLLM_PYTHON": str(tmp_path / "none" / "python")},
    )
    assert "no vLLM environment" in line and "make vllm-env" in line


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns: nothing listens there


def test_caption_engine_unreachable_is_found_before_any_work(stores, tmp_path, capsys):
    folder = tmp_path / "filter"
    shutil.copytree(stores["filter"], folder)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.perf_counter()
    line = refused(
        capsys,
        folder,
        ["caption", "--set", "caption.openai.launch_server=false", "--set", f"caption.openai.base_url={url}"],
    )
    print(f"\nunreachable engine refused in {time.perf_counter() - started:.2f} s: {line}")
    assert "unreachable" in line and url in line and "refused" in line.lower()


class _ModelList(BaseHTTPRequestHandler):
    def do_GET(self):  # http.server calls it by this name
        body = b'{"object": "list", "data": [{"id": "some-other-model", "object": "model"}]}'
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_engine_serving_another_model_is_named():
    server = HTTPServer(("127.0.0.1", 0), _ModelList)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with pytest.raises(CaptionJobError, match="serves some-other-model, not 'wanted-model'"):
            check_engine(CaptionConfig(model="wanted-model", openai={"base_url": base}))
        check_engine(CaptionConfig(model="some-other-model", openai={"base_url": base}))
    finally:
        server.shutdown()
        server.server_close()


def test_exit_codes_of_item_failures():
    assert exit_code(5, 0, strict=False) == 0
    assert exit_code(5, 2, strict=False) == 0  # partial: done, the summary lists the reasons
    assert exit_code(5, 2, strict=True) == 1
    assert exit_code(5, 5, strict=False) == 1  # every item failed
    assert exit_code(0, 0, strict=True) == 0  # nothing to do is not a failure


@pytest.mark.slow  # ~12 s: a Ray Data job
def test_every_clip_failing_exits_non_zero(ray_session, stores, tmp_path, capsys):
    """Synthetic clip bytes do not decode: score runs, records the reason per clip, and exits 1."""
    folder = tmp_path / "split"
    shutil.copytree(stores["split"], folder)
    models_off = [
        "--set",
        "score.aesthetic.enabled=false",
        "--set",
        "score.embedding.enabled=false",
        "--set",
        "score.ocr.enabled=false",
    ]
    code = main(["score", *models_off, *paths_in(folder)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"score: 0 of {CLIPS} scored this run" in out and f"{CLIPS} failed" in out
    assert " x FrameDecodeError: " in out  # grouped by reason
    assert (
        err.strip().splitlines()[-1] == f"reelforge score: all {CLIPS} clips failed (the reasons are above)"
    )


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_traceback_only_with_debug(tmp_path):
    args = ["score", *paths_in(tmp_path)]  # before any model import: each run takes ~1 s
    plain = _cli(*args)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr
    for debug in (_cli(*args, "--debug"), _cli(*args, env={"REELFORGE_DEBUG": "1"})):
        assert debug.returncode != 0 and "Traceback" in debug.stderr and "no clips table" in debug.stderr


def test_version_names_every_library(tmp_path):
    built = _cli("--version")
    assert built.returncode == 0
    names = [line.split()[0] for line in built.stdout.splitlines()]
    assert names == ["reelforge", "Ray", "Lance", "PyTorch", "PySceneDetect", "open_clip", "vLLM"]
    absent = _cli("--version", env={"REELFORGE_VLLM_PYTHON": str(tmp_path / "none" / "python")})
    assert absent.stdout.splitlines()[-1] == "vLLM not built (make vllm-env)"
