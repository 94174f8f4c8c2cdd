"""Skip where a system part is missing on a developer machine, fail where CI should have it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """CI sets CI=true (.ci/run exports it, as hosted CI services do)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip a test whose system part (a browser, its driver, the vLLM environment) is missing; under CI
    fail instead: CI installs every one of them, so a missing one is a broken set-up that must not pass
    as a skip."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
