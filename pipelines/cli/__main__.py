"""`python -m pipelines.cli`: the `reelforge` command (how the vLLM environment and the tests run it)."""

import sys

from pipelines.cli.command import main

if __name__ == "__main__":
    sys.exit(main())
