"""Atomic file writes: the one place the package writes a file that must never be half-written.

Every writer goes through a temporary file in the destination folder, which is flushed and
fsync'ed, renamed over the target (``os.replace`` is atomic on POSIX and Windows) and followed by
an fsync of the folder, so that the rename itself survives a power cut. On any failure the
temporary file is removed and an existing target is left untouched.

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: data already in memory.
- :func:`atomic_copy`: a file copied in chunks (returns its sha256).
- :func:`atomic_path`: for writers that want a file name (tifffile, matplotlib, safetensors,
  SQLite backups): write to the yielded path, the rename happens when the block ends cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_copy", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir",
           "is_temp_name"]

_CHUNK = 1 << 20
_TMP_SUFFIX = ".tmp"


def is_temp_name(name: str) -> bool:
    """True for the names of the temporary files written here (``.<name>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Persist renames/unlinks in `directory`; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends cleanly, it becomes `path`.

    >>> with atomic_path(out / "plot.png") as tmp:      # doctest: +SKIP
    ...     fig.savefig(tmp, format="png")
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    os.close(fd)  # reopened by name: several writers want a real path, not a descriptor
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mkdir: bool = False) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path, mkdir=mkdir) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, mkdir: bool = True) -> None:
    """Write `text` (UTF-8, newlines as given) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mkdir=mkdir)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Copy `src` to `dst` atomically and return the sha256 of the bytes copied."""
    digest = hashlib.sha256()
    with atomic_path(dst) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()
