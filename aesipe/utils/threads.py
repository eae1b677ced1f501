"""How aesipe's processes share the CPU: idle OpenMP threads sleep instead of spinning when others want the cores.

torch (with MKL and oneDNN inside it) runs each op on an OpenMP thread pool: GNU libgomp in the PyPI wheels.
Between two parallel regions libgomp keeps its idle threads spinning (``GOMP_SPINCOUNT``: 300,000 rounds
when nothing is set) so the next region starts without a wake-up. Where other jobs run (a laptop, a shared
box) the spinning threads hold cores that the other jobs -- and this process's own main thread -- are waiting
for: 20 training steps of the demo's MobileNetV2 beside two busy processes took 2.7x the CPU time
(benchmarks/RESULTS.md, "Threads"). ``OMP_WAIT_POLICY=PASSIVE`` makes an idle thread sleep at once, and the
CPU time stays what it is on a quiet machine. On a quiet machine, though, the wake-ups cost wall time: stage 1
of the demo took 25 s against 18 s with spinning. So the policy looks at the machine when the program starts:
if the 1-minute load average is at least ``BUSY_LOAD_PER_CORE`` per core, idle threads sleep; otherwise
libgomp keeps its spinning (set explicitly, ``GOMP_SPINCOUNT=300000``, so child processes inherit the same
choice). Neither changes the number of threads or how work is split: results are bit-for-bit the same.

libgomp reads the variables once, when it is loaded, i.e. at the first ``import torch``: ``apply_thread_policy``
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


BUSY_LOAD_PER_CORE = 0.5
"""A 1-minute load average of at least this per core at start-up means other jobs want the cores: sleep."""
SPIN_COUNT = "300000"
"""libgomp's own default spin count, set explicitly on a quiet machine so that child processes inherit it."""


def apply_thread_policy(environ: MutableMapping[str, str] | None = None, load_per_core: float | None = None) -> bool:
    """Choose how idle OpenMP threads wait (module docstring) unless the user chose; True when it was set here.

    ``load_per_core``: the machine's 1-minute load average per core (default: read now). Too late once torch is
    imported (libgomp has read its settings): then nothing is changed and False is returned, so a caller can tell."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in USER_SETTINGS):
        return False
    if environ is os.environ and "torch" in sys.modules:
        return False
    if load_per_core is None:
        try:
            load_per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:  # no load average on this platform: sleeping is the safe choice
            load_per_core = BUSY_LOAD_PER_CORE
    if load_per_core >= BUSY_LOAD_PER_CORE:
        environ[WAIT_POLICY] = "PASSIVE"
    else:
        environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
