"""Fixtures of the review-loop tests: a tiny synthetic dataset with a run config, Label Studio's own SDK
(``labelstudio_sdk.py``: in its own environment; without it those tests skip), the integration marker."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest


def load_helper():
    """``labelstudio_sdk.py``, imported once as a module (test helpers are files, not a package)."""
    name = "aesipe_tests_labelstudio_sdk"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("labelstudio_sdk.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


helper = load_helper()


def pytest_collection_modifyitems(config, items):
    """``integration`` tests (a real Label Studio server) run only when asked for: ``-m integration``
    (``make test-integration``) or AESIPE_INTEGRATION=1."""
    if "integration" in (config.getoption("markexpr") or "") or os.environ.get("AESIPE_INTEGRATION") == "1":
        return
    skip = pytest.mark.skip(reason="integration test: make test-integration")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def labelstudio_venv() -> Path:
    return helper.LABELSTUDIO_VENV


@pytest.fixture(scope="session")
def labelstudio_sdk():
    sdk, why = helper.find_sdk()
    if sdk is None:
        pytest.skip(why)
    return sdk


@pytest.fixture(scope="session")
def review_data(tmp_path_factory) -> Path:
    """8 train + 4 val synthetic 40-px images, 3 classes, with masks."""
    from aesipe.data.synth import generate

    root = tmp_path_factory.mktemp("review") / "data"
    return generate(root, 8, 4, 40, 0, 3, progress=False)


@pytest.fixture
def review_run(tmp_path, review_data):
    """A run config over ``review_data`` (nothing trained: the importers and the store need only the data)."""
    from aesipe.train.runconfig import resolve_run_config

    return resolve_run_config(tmp_path / "run", None, [
        f"data.root={review_data}", "data.kind=folder", "data.train_split=train", "data.cam_split=train",
        "data.eval_split=val"], save=True)
