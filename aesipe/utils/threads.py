"""How aesipe's processes share the CPU: idle OpenMP threads sleep instead of spinning.

torch (with MKL and oneDNN inside it) runs each op on an OpenMP thread pool: GNU libgomp in the PyPI wheels.
Between two parallel regions libgomp keeps its idle threads spinning (``GOMP_SPINCOUNT``: 300,000 rounds
when nothing is set) so the next region starts without a wake-up. On an idle machine that costs nothing
anyone needs; where other jobs run (a laptop, a shared box) the spinning threads hold cores that the other
jobs -- and this process's own main thread -- are waiting for: a training step of the demo's MobileNetV2 cost
7-9x the CPU time at a load of 5-9 (benchmarks/RESULTS.md, "Threads under load"). ``OMP_WAIT_POLICY=PASSIVE``
makes an idle thread sleep at once. It changes neither the number of threads nor how work is split, so the
results are bit-for-bit the same.

libgomp reads the variable once, when it is loaded, i.e. at the first ``import torch``: ``apply_thread_policy``
must run before that. The ``main`` of ``aesipe-train`` and ``aesipe-export`` call it first; a Python program
that imports torch itself sets the variable itself (or calls this function before its first torch import).
Worker processes (multiprocessing, DataLoader workers, torchrun ranks) inherit it from the environment.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"
USER_SETTINGS = (WAIT_POLICY, "GOMP_SPINCOUNT")
"""Either one set by the user is the user's choice, and is kept."""


def apply_thread_policy(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a wait policy; True when it was set here.

    Too late once torch is imported (libgomp has read its settings): then nothing is changed and False is
    returned, so a caller can tell."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in USER_SETTINGS):
        return False
    if environ is os.environ and "torch" in sys.modules:
        return False
    environ[WAIT_POLICY] = "PASSIVE"
    return True
