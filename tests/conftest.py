"""Suite-wide fixtures. Sub-folders keep their own conftest.py for their fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from aesipe.utils.threads import apply_thread_policy

# The suite runs torch in this process too: the programs' thread policy (idle OpenMP threads sleep instead of
# spinning when the machine is busy; benchmarks/RESULTS.md, "Threads"), applied before any test module imports torch.
apply_thread_policy()

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (or AESIPE_SHARED): real data for optional tests, never needed.
SHARED = Path(os.environ.get("AESIPE_SHARED", REPO.parent / "shared"))
MSRC = SHARED / "data" / "msrc21-voc"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"
# The op library (and any other aesipe cache) of the whole session, subprocesses included, goes to a
# private folder of the checkout (git-ignored, removed by `make clean`), never the user's ~/.cache; it is
# kept between runs, so later sessions load the library without compiling. Set from configure to
# unconfigure because the library is loaded once per process, by whichever test needs it first.
TEST_CACHE = REPO / "build" / "test-cache"
_session_env = pytest.MonkeyPatch()


def pytest_configure(config):
    _session_env.setenv("AESIPE_CACHE_DIR", str(TEST_CACHE))


def pytest_unconfigure(config):
    _session_env.undo()


@pytest.fixture(scope="session")
def msrc_root() -> Path:
    if not (MSRC / "class_names.txt").is_file():
        pytest.skip("../shared/data/msrc21-voc is absent")
    return MSRC


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip("../shared/weights/mobilenet_v2_imagenet.pth is absent")
    return MOBILENET_WEIGHTS
