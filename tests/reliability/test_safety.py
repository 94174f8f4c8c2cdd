"""Safe loading and execution: nothing is unpickled, nothing runs through a shell, API keys stay secret."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from store import CLIPS, CLIPS_SCHEMA, Store

from .chat_server import ChatServer
from .corpus import encode_h264, shot_frames
from .faults import caption_command

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("curate", "caption", "train", "pipelines", "bench")


# ---- static audit -------------------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_string_expression(node: ast.AST | None) -> bool:
    """A str literal, f-string or concatenation: a command line a shell-like split would be needed for."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return isinstance(node, (ast.JoinedStr, ast.BinOp))


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Calls that unpickle, run a shell or evaluate code: 'file:line: what' for each."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        if name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        elif name.split(".")[0] in (
            "pickle",
            "cPickle",
            "dill",
            "cloudpickle",
            "joblib",
            "marshal",
            "shelve",
        ) and (name.endswith((".load", ".loads", ".open"))):
            found.append(f"{where}: {name} (unpickling)")
        elif name in ("os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl", "commands.getoutput"):
            found.append(f"{where}: {name} (shell)")
        elif name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
            found.append(f"{where}: {name}()")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            loader = _keyword(node, "Loader")
            if name != "yaml.load" or not (loader is not None and "Safe" in _dotted(loader)):
                found.append(f"{where}: {name} without SafeLoader")
        elif name in ("numpy.load", "np.load") and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: {name}(allow_pickle=True)")
        if _is_true(_keyword(node, "shell")):
            found.append(f"{where}: {name}(shell=True)")
        first = node.args[0] if node.args else None
        if name.startswith("subprocess.") and _is_string_expression(first):
            found.append(f"{where}: {name} with a command string (use an argument list)")
    return found


def test_audit_finds_each_unsafe_pattern():
    bad = (
        "import torch, pickle, os, subprocess, yaml, numpy as np\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\nos.system('ls ' + name)\n"
        "subprocess.run(f'ffmpeg -i {name}', shell=True)\neval(text)\nexec(text)\nyaml.load(t)\n"
        "np.load(p, allow_pickle=True)\nsubprocess.check_output('ls')\n"
    )
    assert len(unsafe_calls(bad)) == 11
    good = (
        "import torch, yaml, subprocess\ntorch.load(p, map_location='cpu', weights_only=True)\n"
        "yaml.safe_load(t)\nyaml.load(t, Loader=yaml.SafeLoader)\nmodel.eval()\nsubprocess.run(['ls', name])\n"
    )
    assert unsafe_calls(good) == []


def test_packages_never_unpickle_shell_out_or_eval():
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found += unsafe_calls(path.read_text(), str(path.relative_to(REPO)))
    assert found == []


def test_checkpoints_are_safetensors_only():
    """The trainer's checkpoint module reads and writes tensors with safetensors only."""
    source = (REPO / "train" / "checkpoint.py").read_text()
    assert "safetensors" in source and "torch.save(" not in source and "torch.load(" not in source


# ---- API keys of the openai caption engine -------------------------------------------------------------

SECRET = "sk-reelforge-test-3f9a1c7e5b2d4086"
KEY_ENV = "RF_TEST_CAPTION_API_KEY"


def clips_store(root: Path, count: int = 3) -> Store:
    """A store holding `count` real H.264 clips (no split needed for a caption test)."""
    store = Store(root)
    rows = []
    for i in range(count):
        data = encode_h264(root.parent / f"clip{i}.mp4", shot_frames(40 + i, shots=1)[:25])
        rows.append(
            dict.fromkeys(CLIPS_SCHEMA.names)
            | {
                "clip_id": f"v{i}_0000000000000",
                "video_id": f"v{i}",
                "uri": f"clip{i}.mp4",
                "clip_index": 0,
                "start_s": 0.0,
                "end_s": 1.0,
                "start_frame": 0,
                "end_frame": 25,
                "num_frames": 25,
                "fps": 25.0,
                "width": 192,
                "height": 108,
                "codec": "h264",
                "size_bytes": len(data),
                "video": data,
            }
        )
    store.root.mkdir(parents=True)
    store.append(CLIPS, pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA))
    return store


def run_caption_job(store: Store, port: int, ray_tmp: Path) -> subprocess.CompletedProcess:
    """The caption job in its own process and Ray (so its workers inherit the key from the environment)."""
    sets = [
        f"store.root={store.root}",
        f"ray.temp_dir={ray_tmp}",
        "caption.engine=openai",
        "caption.only_selected=false",  # no filter has run on these clips
        "caption.openai.launch_server=false",
        "caption.model=tiny-test-vlm",
        f"caption.openai.base_url=http://127.0.0.1:{port}/v1",
        f"caption.openai.api_key_env={KEY_ENV}",
        "caption.openai.retries=0",
        "caption.frames.num_frames=2",
        "caption.batch_size=2",
        "caption.decode_concurrency=1",
    ]
    env = {**os.environ, KEY_ENV: SECRET, "RAY_LOG_TO_DRIVER": "1"}
    return subprocess.run(
        caption_command(sets), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def everything_written(store: Store, ray_tmp: Path, proc: subprocess.CompletedProcess) -> dict[str, str]:
    """Every place a key could leak to: output, Ray's logs, every dataset version's metadata and rows."""
    import lance

    places = {"stdout": proc.stdout, "stderr": proc.stderr}
    for path in ray_tmp.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.suffix != ".sock":
            try:
                places[f"ray:{path.name}"] = path.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
    for uri in [store.clips_uri, *map(str, (store.root / "staging").glob("*.lance"))]:
        ds = lance.dataset(uri)
        for v in ds.versions():
            old = lance.dataset(uri, version=v["version"])
            places[f"{uri}@{v['version']}:meta"] = json.dumps(
                old.schema.metadata
                and {k.decode(): val.decode("utf-8", "replace") for k, val in old.schema.metadata.items()}
            )
            places[f"{uri}@{v['version']}:metadata"] = json.dumps(dict(v.get("metadata") or {}))
            columns = [f.name for f in old.schema if f.name not in ("video", "thumbnail")]
            places[f"{uri}@{v['version']}:rows"] = json.dumps(
                old.to_table(columns=columns).to_pylist(), default=str
            )
    for path in store.root.rglob("*"):
        if path.is_file() and path.suffix in (".manifest", ".txn", ".json"):
            places[f"file:{path.name}"] = path.read_bytes().decode("utf-8", "replace")
    return places


@pytest.mark.slow
def test_openai_key_comes_from_the_environment_and_never_leaks(tmp_path, ray_tmp):
    store = clips_store(tmp_path / "store")
    with ChatServer() as server:
        proc = run_caption_job(store, server.port, ray_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.auth_headers and set(server.auth_headers) == {f"Bearer {SECRET}"}
    captions = store.read_clips(columns=["clip_id", "caption", "caption_error"]).to_pylist()
    assert all(c["caption"] for c in captions), captions
    leaks = [where for where, text in everything_written(store, ray_tmp, proc).items() if SECRET in text]
    assert leaks == []
    assert KEY_ENV in json.dumps(store.stage_records())  # the variable's NAME is recorded, not its value


@pytest.mark.slow
def test_key_echoed_by_a_failing_server_is_not_stored(tmp_path, ray_tmp):
    store = clips_store(tmp_path / "store", count=2)
    with ChatServer(echo_auth=True) as server:
        proc = run_caption_job(store, server.port, ray_tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = store.read_clips(columns=["caption_error"])["caption_error"].to_pylist()
    assert all(e and "401" in e for e in errors), errors
    leaks = [where for where, text in everything_written(store, ray_tmp, proc).items() if SECRET in text]
    assert leaks == []


@pytest.fixture
def ray_tmp():
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rfs-"))  # short: Ray's socket paths must stay under ~100 chars
    yield path
    shutil.rmtree(path, ignore_errors=True)
