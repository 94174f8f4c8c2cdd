"""Shared fixtures: one local Ray per test session, the built-in sample footage, the shared real footage."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FOOTAGE = REPO.parent / "shared" / "footage"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting one takes 4-10 s here), with its own temp dir."""
    import ray

    from pipelines.runtime import ignore_lance_fork_warning

    ignore_lance_fork_warning()
    temp_dir = tempfile.mkdtemp(prefix="rf-ray-")  # short: Ray's socket paths must stay under ~100 chars
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sample_footage(tmp_path_factory) -> Path:
    """The built-in sample footage with its `<file>.gt.json` ground truth (generated, never committed)."""
    from pipelines.sample_footage import write_sample_footage

    out = tmp_path_factory.mktemp("sample_footage")
    write_sample_footage(out)
    return out


@pytest.fixture(scope="session")
def shared_footage() -> Path:
    """Real footage with ground truth from ../shared/footage; tests using it skip where it is absent."""
    if not SHARED_FOOTAGE.is_dir():
        pytest.skip(f"real footage not available ({SHARED_FOOTAGE.name} beside the checkout is absent)")
    return SHARED_FOOTAGE


@pytest.fixture
def tmp_store(tmp_path):
    from store import Store

    return Store(tmp_path / "store")


def pytest_configure(config):
    # Keep threaded libraries from oversubscribing the 2 shared cores during tests.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _ray_join_variables_stay_per_test():
    """A command run in-process may join a project's Ray head by setting RAY_ADDRESS and its token
    (pipelines.runtime.join_project_ray); left set, every later test's subprocesses would try to join
    that head after it stopped, and hang. Each test gets them back as they were."""
    names = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
