"""Label Studio's own SDK (``label-studio-sdk``), run in its own environment, for the tests that hold our
brush masks to it. It pins opencv-python-headless < 4.13 and with it an older numpy than aesipe's environment,
so it lives in ``.venv-labelstudio`` (``make labelstudio-venv``, with the Label Studio server) and is called
there in a subprocess. Loaded as a file by the conftests that need it (test helpers are not a package).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LABELSTUDIO_VENV = Path(os.environ.get("AESIPE_LABELSTUDIO_VENV", REPO / ".venv-labelstudio"))
# Runs in the SDK's environment: encodes or decodes the masks it reads as JSON on stdin with the SDK's brush converter.
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


def find_sdk() -> tuple[LabelStudioSDK | None, str]:
    """The SDK, or None and why not."""
    python = LABELSTUDIO_VENV / "bin" / "python"
    if not python.is_file():
        return None, f"no Label Studio environment at {LABELSTUDIO_VENV} (make labelstudio-venv)"
    probe = subprocess.run([str(python), "-c", "import label_studio_sdk.converter.brush"], capture_output=True)
    if probe.returncode != 0:
        return None, f"label-studio-sdk is not installed in {LABELSTUDIO_VENV}"
    return LabelStudioSDK(python), ""
