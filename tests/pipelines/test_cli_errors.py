"""Every command run where it cannot work (empty folder, a store after split, score or filter only,
no model weights, no vLLM environment, an engine nobody serves): one line naming what is wrong and what
fixes it, a non-zero exit, and the store exactly as it was. Plus --debug, --version and exit codes."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from synthetic_store import STATES, make_store

from caption.config import CaptionConfig
from pipelines.cli import main
from pipelines.config import load_config
from pipelines.jobs.caption_checks import CaptionJobError, check_engine
from pipelines.outcome import exit_code
from store import Store, contract
from train.checkpoint import capture_rng, save_checkpoint
from train.config import VAEConfig
from train.dit import DiT
from train.sample import check_sample_setup, resolve_checkpoint
from train.text import minilm_path
from train.vae import VideoVAE, save_vae

CLIPS = 40
# The demo config's autoencoder and text encoder (MiniLM: 384-dimensional tokens).
DEMO = load_config("demo")
TEXT_DIM = 384


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
    for state, stages in STATES.items():
        made[state] = base / state
        make_store(made[state] / "store", CLIPS, embed_dim=8, stages=stages)
    # Captioned, with the autoencoder train.vae.weights_path names (untrained weights: nothing here
    # decodes the synthetic clips), so train gets as far as the clips it would learn from.
    made["trainable"] = base / "trainable"
    shutil.copytree(made["caption"], made["trainable"])
    save_vae(VideoVAE(DEMO.train.vae), made["trainable"] / "vae")
    # ... plus latent columns whose encode record names another autoencoder and text encoder.
    made["encoded-elsewhere"] = base / "encoded-elsewhere"
    shutil.copytree(made["trainable"], made["encoded-elsewhere"])
    store = Store(made["encoded-elsewhere"] / "store")
    ids = store.read_clips(columns=["clip_id"])["clip_id"]
    schema = contract.stage_schema("encode")
    columns = {f.name: pa.nulls(len(ids), f.type) for f in schema if f.name != "clip_id"}
    columns["latent_bucket"] = pa.array(["64x64x9"] * len(ids))
    store.add_columns(
        pa.table({"clip_id": ids, **columns}), stage="encode", config={"signature": {"vae": "another"}}
    )
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
        ["score", "--set", "score.image_tower.allow_random_weights=false"],
        ["no image-tower weights", "score.image_tower.checkpoint"],
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
    # clips that exist but that training cannot use
    (
        "trainable",
        ["train", "--set", "train.data.filter=selected and num_frames > 1000"],
        ["no clip", "train.data.filter", "reelforge filter"],
    ),
    (
        "trainable",
        ["train", "--set", "train.data.buckets=[{height: 64, width: 64, frames: 97}]"],
        ["14 shorter than every bucket", "add a bucket of fewer frames to train.data.buckets"],
    ),
    (
        "trainable",
        ["train", "--set", "train.data.filter=selected and"],
        ["train.data.filter 'selected and' is not SQL", "And. Line 1, Col: 12"],
    ),
    (
        "trainable",
        ["encode", "--set", "train.data.buckets=[{height: 64, width: 64, frames: 97}]"],
        ["14 shorter than every bucket", "left to encode", "train.data.buckets"],
    ),
    (
        "trainable",
        ["train", "--ray-workers", "2", "--set", "train.batch_size=100"],
        ["2 training workers", "1 batch(es) of train.batch_size=100", "lower train.batch_size"],
    ),
    ("trainable", ["train", "--ray-workers", "-1"], ["--ray-workers -1", "at least 1"]),
    (
        "trainable",
        ["train", "--set", "train.text.kind=t5", "--set", "train.text.path=no-such-t5"],
        ["text encoder", "train.text.path no-such-t5"],
    ),
    (
        "trainable",
        ["train", "--set", "train.data.prompt_template='{caption} {caption_shot}.'"],
        ["train.data.prompt_template names ['caption_shot']", "reelforge score"],
    ),
    (
        "encoded-elsewhere",
        ["train", "--set", "train.data.latents=precomputed"],
        ["another autoencoder", "reelforge encode", "train.data.latents=auto"],
    ),
    (
        "split",
        ["train-vae", "--set", "train.vae_train.frames=97"],
        [f"{CLIPS} shorter than every bucket", "lower train.vae_train.frames"],
    ),
    ("split", ["train-vae", "--set", "train.vae_train.frames=10"], ["train.vae_train.frames", "1 + k*4"]),
    (
        "split",
        ["train-vae", "--set", "train.vae_train.filter=num_frames > 1000"],
        ["no clip", "train.vae_train.filter"],
    ),
    # a --set value YAML cannot read: the key and how to quote it
    (
        "trainable",
        ["train", "--set", "train.data.prompt_template={caption}."],
        ["--set train.data.prompt_template={caption}.: the value is not YAML", "quote a text value"],
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


@pytest.mark.slow  # ~20 s when it is the first test to start the session's Ray
def test_more_ray_workers_than_the_cluster_has(ray_session, stores, tmp_path, capsys):
    """The session's Ray has 2 CPUs; Ray Train would wait for a third forever."""
    folder = tmp_path / "trainable"
    shutil.copytree(stores["trainable"], folder)
    line = refused(capsys, folder, ["train", "--ray-workers", "3", "--set", "train.batch_size=1"])
    assert "needs 3 CPU" in line and "has 2" in line and "--ray-workers 2 or fewer" in line


def write_checkpoint(folder: Path) -> None:
    """A real (untrained) DiT checkpoint in folder/train, trained (it says) with the demo config, the
    autoencoder in folder/vae and the MiniLM text encoder in folder/minilm."""
    (folder / "minilm").symlink_to(minilm_path())  # the packaged weights, at a path that can go away
    config = DEMO.train.model_copy(
        update={
            "vae": DEMO.train.vae.model_copy(update={"weights_path": str(folder / "vae")}),
            "text": DEMO.train.text.model_copy(update={"path": str(folder / "minilm")}),
        }
    )
    model = DiT(config.dit, latent_channels=config.vae.latent_channels, text_dim=TEXT_DIM)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    extra = {
        "config": config.model_dump(mode="json"),
        "text_dim": TEXT_DIM,
        "latent_channels": config.vae.latent_channels,
    }
    save_checkpoint(
        folder / "train",
        1,
        model,
        copy.deepcopy(model),
        optimizer,
        scheduler,
        [capture_rng(torch.Generator())],
        extra,
    )


# (what to do to the checkpoint's autoencoder or text encoder, sample settings, words the line must hold)
SAMPLE_CASES = [
    (
        "keep",
        ["--set", "sample.height=60"],
        ["sample.height=60", "multiples of 8", "sample.frames/height/width"],
    ),
    ("keep", ["--set", "sample.width=72"], ["latent grid (3, 8, 9)", "patch size (1, 2, 2)"]),
    ("keep", ["--set", "sample.frames=8"], ["sample.frames=8", "1 + k*4"]),
    ("retrain", [], ["latent_channels: folder has 4, config asks 8", "reelforge train --fresh"]),
    ("delete", [], ["has no vae_config.json", "put those weights back"]),
    ("delete text encoder", [], ["text encoder it was trained with", "minilm is not a folder"]),
]


@pytest.mark.parametrize(("change", "settings", "words"), SAMPLE_CASES)
def test_sample_with_a_checkpoint_that_cannot_serve_it(stores, tmp_path, capsys, change, settings, words):
    folder = tmp_path / "trained"
    shutil.copytree(stores["trainable"], folder)
    write_checkpoint(folder)
    # The checkpoint passes as it was trained: only the change below makes sample refuse.
    check_sample_setup(DEMO.sample, resolve_checkpoint(folder / "train"))
    if change == "retrain":  # train-vae --fresh with another latent size, after training
        small = VAEConfig(**{**DEMO.train.vae.model_dump(), "latent_channels": 4, "weights_path": None})
        save_vae(VideoVAE(small), folder / "vae")
    elif change == "delete":
        shutil.rmtree(folder / "vae")
    elif change == "delete text encoder":
        (folder / "minilm").unlink()
    line = refused(capsys, folder, ["sample", *settings])
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
