"""Suite-wide fixtures. Sub-folders keep their own conftest.py for their fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (or AESIPE_SHARED): real data for optional tests, never needed.
SHARED = Path(os.environ.get("AESIPE_SHARED", REPO.parent / "shared"))
MSRC = SHARED / "data" / "msrc21-voc"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"


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
