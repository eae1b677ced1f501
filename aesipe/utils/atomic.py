"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Write to a temporary file in the destination folder, fsync, then ``os.replace`` over the target:
rename within one filesystem is atomic on POSIX and Windows.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``; the target appears only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> None:
    """Atomic write through a callback taking a binary file (``torch.save``, ``np.savez``, PIL)."""
    with atomic_open(path) as handle:
        writer(handle)
