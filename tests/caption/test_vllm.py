"""Real vLLM on CPU: the tiny Qwen2-VL built locally, served by vLLM's OpenAI-compatible server
(from the vLLM environment) and captioning real clips through the caption stage; then the
in-process engine through Ray Data's LLM API, run by the vLLM environment's python."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from caption_clips import clips_rows, photo_clips
from ci import skip_unless_ci

from caption.stage import CAPTION_SCHEMA
from caption.vllm.runtime import (
    LAUNCHED_SERVER_KEY_ENV,
    REPO_ROOT,
    VLLMEnvMissing,
    ensure_tiny_vlm,
    launched_server,
    tiny_cpu_config,
    vllm_env_vars,
    vllm_python,
)
from pipelines.config import parse_config
from pipelines.jobs.caption import run_caption
from store import Store

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def vllm_env():
    try:
        return vllm_python()
    except VLLMEnvMissing as err:
        skip_unless_ci(str(err))


@pytest.fixture(scope="module")
def tiny_model(vllm_env):
    return ensure_tiny_vlm()


@pytest.fixture(scope="module")
def server(tiny_model):
    """The client settings of a real vLLM server with the tiny model, launched the way
    `caption.openai.launch_server` does (its key in the environment meanwhile); leaving the context
    stops it (SIGINT, then SIGKILL of its process group)."""
    cfg = tiny_cpu_config(
        tiny_model, vllm={"max_num_seqs": 8}, openai={"launch_server": True, "launch_timeout_s": 420}
    )
    with launched_server(cfg) as running:
        yield running.openai


def _models_status(base_url: str, key: str | None) -> int:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{base_url}/models", headers=headers), timeout=30
        ) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_launched_server_refuses_requests_without_its_key(server):
    key = os.environ[server.api_key_env]
    assert server.api_key_env == LAUNCHED_SERVER_KEY_ENV and len(key) >= 32
    assert _models_status(server.base_url, None) == 401
    assert _models_status(server.base_url, key[::-1]) == 401
    assert _models_status(server.base_url, key) == 200
    # the key is in the server's environment, in no process's command line (every local user can read those)
    assert not [c for c in Path("/proc").glob("[0-9]*/cmdline") if key in _read_or_empty(c)]


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:  # the process ended meanwhile
        return ""


def _store(root) -> tuple[Store, list[str]]:
    store = Store(root)
    clips = photo_clips(copies=2)
    clips["broken"] = b"\x00\x00\x00\x18ftypmp42 this is not a playable clip"
    store.append("clips", clips_rows(clips))
    return store, [c for c in clips if c != "broken"]


def _caption_section(model, **extra) -> dict:
    base = tiny_cpu_config(model).model_dump(mode="json", exclude_defaults=True)
    return {
        **base,
        "batch_size": 4,
        "decode_num_cpus": 0.25,
        "sampling": {"max_tokens": MAX_TOKENS, "temperature": 0.2, "seed": 0},
        "frames": {"num_frames": 8, "max_pixels": 112 * 112},
        **extra,
    }


def _rows(store: Store) -> dict[str, dict]:
    return {r["clip_id"]: r for r in store.read_clips(columns=CAPTION_SCHEMA.names).to_pylist()}


def _assert_captioned(rows: dict[str, dict], good: list[str], model) -> None:
    for cid in good:
        row = rows[cid]
        assert row["caption_error"] is None, row
        assert isinstance(row["caption"], str) and len(row["caption"]) >= 8
        assert row["caption_model"] == str(model)
        assert row["caption_prompt_version"] == "detailed/v1"
        assert json.loads(row["caption_params"])["max_tokens"] == MAX_TOKENS
        # Frames reached the model: 8 frames at 112x112 add far more tokens than the text prompt alone.
        assert row["caption_prompt_tokens"] > 100
        assert 1 <= row["caption_output_tokens"] <= MAX_TOKENS
        assert row["caption_latency_s"] > 0
    broken = rows["broken"]
    assert broken["caption"] is None
    assert broken["caption_error"].startswith("frames: ")


def test_openai_engine_against_a_real_vllm_server(server, tiny_model, ray_session, tmp_path):
    store, good = _store(tmp_path / "store")
    openai = {"base_url": server.base_url, "api_key_env": server.api_key_env, "concurrency": 4}
    section = _caption_section(tiny_model, engine="openai", openai=openai)
    # No filter has run on these clips: caption them all, until the `selected` column below.
    cfg = parse_config({"store": {"root": str(store.root)}, "caption": {**section, "only_selected": False}})

    summary = run_caption(cfg, progress=False)
    assert (summary.attempted, summary.captioned, summary.failed) == (len(good) + 1, len(good), 1)
    assert summary.output_tokens > 0 and summary.frame_prep_s > 0
    rows = _rows(store)
    _assert_captioned(rows, good, tiny_model)
    first_captions = {cid: rows[cid]["caption"] for cid in good}
    assert "caption" in store.stage_records()

    # A rerun only retries what has no caption (the broken clip).
    again = run_caption(cfg, progress=False)
    assert (again.attempted, again.skipped_done) == (1, len(good))
    assert {cid: r["caption"] for cid, r in _rows(store).items() if cid in good} == first_captions

    # With a `selected` column only selected clips are captioned; recaption starts over.
    chosen = {"clip0-coffee", "clip1-rocket"}
    ids = list(_rows(store))
    store.add_columns(
        pa.table({"clip_id": ids, "selected": [c in chosen for c in ids]}),
        stage="filter",
        config={"expression": "test"},
    )
    selected_only = parse_config({"store": {"root": str(store.root)}, "caption": section})
    redo = run_caption(selected_only, recaption=True, progress=False)
    assert redo.attempted == 2 and redo.selection == "selected by the filter stage"
    rows = _rows(store)
    assert {cid for cid, r in rows.items() if r["caption"] is not None} == chosen


def test_in_process_vllm_engine_through_ray_data(vllm_env, tiny_model, tmp_path):
    _caption_in_process(vllm_env, tiny_model, tmp_path, {})


@pytest.mark.gpu
def test_in_process_vllm_engine_on_a_gpu(tiny_model, tmp_path):
    """The same job on CUDA, in the CUDA vLLM environment (`pytest -m gpu`)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here (torch.cuda.is_available() is False)")
    try:
        python = vllm_python("GPU")
    except VLLMEnvMissing as err:
        pytest.skip(str(err))
    vllm = {"device": "GPU", "gpu_memory_utilization": 0.3}
    _caption_in_process(python, tiny_model, tmp_path, {"vllm": vllm})


def _caption_in_process(vllm_env, tiny_model, tmp_path, changes: dict) -> None:
    store, good = _store(tmp_path / "store")
    ray_tmp = tempfile.mkdtemp(prefix="rf-vllm-")  # short: Ray's socket paths must stay under ~100 chars
    section = _caption_section(tiny_model, engine="vllm", only_selected=False)  # no filter ran
    for key, value in changes.items():
        section[key] = {**section.get(key, {}), **value}
    config = {
        "store": {"root": str(store.root)},
        "ray": {"num_cpus": 2, "temp_dir": ray_tmp},
        "caption": section,
    }
    script = textwrap.dedent(
        """
        import json, sys
        import ray
        from pipelines.config import parse_config
        from pipelines.jobs.caption import run_caption
        summary = run_caption(parse_config(json.loads(sys.argv[1])), progress=False)
        ray.shutdown()
        print("SUMMARY", json.dumps({"attempted": summary.attempted, "captioned": summary.captioned,
                                     "failed": summary.failed, "output_tokens": summary.output_tokens}))
        """
    )
    process = subprocess.Popen(
        [str(vllm_env), "-c", script, json.dumps(config)],
        cwd=REPO_ROOT,
        env=vllm_env_vars(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group: Ray's daemons and vLLM's engine die with it
    )
    try:
        output, _ = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(
            "in-process vLLM caption job did not finish in 900 s:\n" + output.decode(errors="replace")[-4000:]
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything the job left behind
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    summary = json.loads(text.rsplit("SUMMARY ", 1)[1].splitlines()[0])
    assert summary == {**summary, "attempted": len(good) + 1, "captioned": len(good), "failed": 1}
    assert summary["output_tokens"] > 0
    _assert_captioned(_rows(store), good, tiny_model)
