"""Fixtures of the review-loop tests: a tiny synthetic dataset with a run config, and Label Studio's own SDK.

The SDK (``label-studio-sdk``) pins opencv-python-headless < 4.13 and with it an older numpy than aesipe's
environment, so it lives in its own virtual environment, ``.venv-labelstudio`` (``make labelstudio-venv``,
with the Label Studio server), and the tests call it there in a subprocess; without it they skip.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
LABELSTUDIO_VENV = Path(os.environ.get("AESIPE_LABELSTUDIO_VENV", REPO / ".venv-labelstudio"))
# Runs in the SDK's environment: encode or decode each mask of an npz file with the SDK's brush converter.
_SDK_SCRIPT = r"""
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
job = json.load(sys.stdin)
if job["op"] == "decode":
    out = [np.asarray(brush.decode_rle(rle)).reshape(h, w, 4)[:, :, 3].tolist() for rle, h, w in job["items"]]
else:
    out = [brush.mask2rle(np.asarray(m, dtype=np.uint8)) for m in job["items"]]
json.dump(out, sys.stdout)
"""


class LabelStudioSDK:
    """Label Studio's brush converter (``label_studio_sdk.converter.brush``), run in its own environment."""

    def __init__(self, python: Path):
        self.python = python

    def _call(self, job: dict):
        done = subprocess.run([str(self.python), "-c", _SDK_SCRIPT], input=json.dumps(job), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    def decode(self, items: list[tuple[list[int], int, int]]) -> list[np.ndarray]:
        """Alpha channel (uint8 H x W) of each (rle, height, width), decoded by the SDK."""
        return [np.asarray(a, np.uint8) for a in self._call({"op": "decode", "items": items})]

    def encode(self, masks: list[np.ndarray]) -> list[list[int]]:
        """The SDK's RLE of each uint8 mask (``mask2rle``: 0 or 255 per pixel)."""
        return self._call({"op": "encode", "items": [np.asarray(m).tolist() for m in masks]})


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
    return LABELSTUDIO_VENV


@pytest.fixture(scope="session")
def labelstudio_sdk() -> LabelStudioSDK:
    python = LABELSTUDIO_VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no Label Studio environment at {LABELSTUDIO_VENV} (make labelstudio-venv)")
    probe = subprocess.run([str(python), "-c", "import label_studio_sdk.converter.brush"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"label-studio-sdk is not installed in {LABELSTUDIO_VENV}")
    return LabelStudioSDK(python)


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
