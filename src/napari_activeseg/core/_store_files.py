"""File-level helpers of the core: hashes, the process lock, and the checkpoint
sniffing that keeps pickles out.

Nothing here knows about SQLite or projects. The project package
(:mod:`napari_activeseg.core.project`) builds on it, and so do :mod:`~napari_activeseg.core.imageio`
and :mod:`~napari_activeseg.core.export`, which is why it sits beside them rather than inside
the package (that would make ``imageio`` and ``project`` import each other).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import os
import socket
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PICKLE_SUFFIXES",
    "LockHeld",
    "ProcessLock",
    "encode_tiff",
    "sha256_bytes",
    "sha256_file",
    "sniff_safetensors",
    "utc_now",
]

#: Suffixes of checkpoint formats that are (or contain) Python pickles.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar", ".joblib", ".dill")

#: A safetensors header larger than this is not a real header (the format caps it at 100 MB).
_MAX_HEADER = 100 * 1024 * 1024
_CHUNK = 1 << 20


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encode_tiff(array: np.ndarray, **kwargs: Any) -> bytes:
    """Encode an array as a zlib-compressed TIFF in memory (hash first, then write)."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, compression="zlib", **kwargs)
    return buffer.getvalue()


# --------------------------------------------------------------------------- checkpoint sniffing


def sniff_safetensors(data: bytes, name: str) -> str | None:
    """Return why `data` is not a safetensors file (None if its header is one).

    Only the framing is checked: an 8-byte little-endian header length, then a JSON object.
    The reasons name what the file most likely is, because the user needs to know why a
    checkpoint they were handed is refused.
    """
    problem = _framing_problem(data)
    if problem is None:
        return None
    # The framing is checked first: a valid header length can start with any byte.
    if data[:4] == b"PK\x03\x04":
        return (
            f"{name} is a ZIP archive: the format torch.save() writes, whose content is a Python "
            "pickle. Unpickling runs whatever code the file's author put in it"
        )
    if data[:1] == b"\x80" or data[:1] in (b"(", b"}", b"]", b"c"):
        return (
            f"{name} is a Python pickle. Unpickling runs whatever code the file's author put in it"
        )
    return f"{name} {problem}; it may be a pickle-based checkpoint or corrupt"


def _framing_problem(data: bytes) -> str | None:
    if len(data) < 10:
        return f"is too short ({len(data)} bytes) to be a safetensors file"
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > _MAX_HEADER or 8 + n > len(data):
        return (
            f"does not start with a safetensors header (declared header length {n} for a "
            f"{len(data)}-byte file)"
        )
    try:
        parsed = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "has no valid safetensors JSON header"
    if not isinstance(parsed, dict):
        return "has a safetensors header that is not a JSON object"
    return None


# --------------------------------------------------------------------------- process lock


class LockHeld(Exception):
    """The lock is held by another process (or another open in this process)."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info)
        self.info = info


#: Byte locked on Windows: far beyond the info text, so other processes can still read that.
_WIN_LOCK_OFFSET = 1 << 20


class ProcessLock:
    """An exclusive advisory lock on a file, held while a project is open read-write.

    POSIX uses ``flock`` (per open file description, so a second open in the *same* process
    conflicts too, and the kernel drops it when the process dies, however it dies); Windows uses
    ``msvcrt.locking`` on one byte. The file holds a JSON note of who holds the lock, read by the
    loser to explain whom to ask. The file is never deleted: deleting a lock file races with
    another process that has just opened it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockHeld`; raises OSError if the file cannot be made."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                raise LockHeld(_read_info(fd))
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "user": _user(),
                "since": utc_now(),
                "note": "napari-activeseg project lock; released when the process exits",
            }
            text = json.dumps(info).encode()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, text)
            with contextlib.suppress(OSError):
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __del__(self) -> None:
        # A Project dropped without close() must not keep its folder locked until exit.
        with contextlib.suppress(Exception):
            self.release()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            _unlock(fd)
        os.close(fd)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "?"


def _read_info(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096)
        info = json.loads(text.decode("utf-8")) if text.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import errno
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
