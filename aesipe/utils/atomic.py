"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Write to a temporary file in the destination folder, fsync, then ``os.replace`` over the target:
rename within one filesystem is atomic on POSIX and Windows. The file gets the permissions any other
tool's new file would get under the user's umask (``mkstemp`` alone would leave it 0600, unreadable by a
teammate, a web server or a labelling tool running as another user).

Every temporary file aesipe makes is named ``.aesipe-tmp-<random>.tmp`` (``TEMPORARY_PREFIX``): short, whatever the
target's name (a 250-byte file name still has room), and a name no user file has, so the clean-up of a
killed run (``remove_temporaries``) removes aesipe's files and nothing else.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread of ours runs.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()
"""Mode of every file aesipe writes: what open(..., "w") would create under the user's umask."""


TEMPORARY_PREFIX = ".aesipe-tmp-"
"""The name every temporary file of aesipe starts with (and only they)."""


def temporary_name(folder: str | os.PathLike, tag: str = "") -> Path:
    """A fixed name in aesipe's temporary namespace (``tag``: what it is for), e.g. a journal of a run."""
    return Path(folder) / f"{TEMPORARY_PREFIX}{tag}"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``; the target appears only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX, suffix=suffix)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, FILE_MODE)
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


def remove_temporaries(folder: str | os.PathLike, recursive: bool = False) -> int:
    """Delete the temporary files a killed writer of aesipe left in ``folder`` (``TEMPORARY_PREFIX`` names
    only, never a user's file; a symbolic link to a folder is not followed); returns how many. Call it where
    one process owns the folder (a training stage's checkpoints, a locked labelling job's outputs): a live
    writer's temporary file would be taken from under it."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return 0
    removed = 0
    for root, _folders, files in os.walk(folder, followlinks=False):
        for name in files:
            if name.startswith(TEMPORARY_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
        if not recursive:
            break
    return removed
