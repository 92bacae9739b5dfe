"""What the NBD server serves: the `ExportBackend` protocol (docs/CONTRACTS.md section 1) and `FileBackend`.

The server checks ranges and read-only access before it calls a backend, so a backend only sees requests
inside ``[0, size)``. Errors a backend raises are `OSError`s whose errno goes to the client (EIO, ENOSPC,
EPERM, EINVAL); anything else is a bug and is sent as EIO.

Two optional fast paths a backend may offer; the server uses them when present:

- ``pread_into(offset, buf)``: fill the writable buffer ``buf`` (a memoryview) from ``offset``, so a read
  reply needs no intermediate ``bytes``.
- ``accepts_views = True``: ``pwrite`` may be handed a memoryview into the connection's receive buffer that
  is valid only during the call (a backend that keeps ``data`` longer must not set this).
- ``block_status(offset, length)``: holes and data for NBD block status (block_status.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from vra_appliance.fileio import pread_into, write_zeroes
from vra_appliance.iofilter.block_status import file_extents


@runtime_checkable
class ExportBackend(Protocol):
    """A byte range served as one NBD export. Calls may come from several connection threads at once."""

    name: str
    size: int
    read_only: bool

    def pread(self, offset: int, length: int) -> bytes: ...

    def pwrite(self, offset: int, data: bytes, fua: bool = False) -> None: ...

    def flush(self) -> None: ...

    def trim(self, offset: int, length: int) -> None: ...

    def write_zeroes(self, offset: int, length: int, may_trim: bool = False) -> None: ...

    def close(self) -> None: ...


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10


def _load_fallocate():
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def _falloc(fd: int, mode: int, offset: int, length: int) -> bool:
    """Linux fallocate(2); False when the file system does not support ``mode`` (caller falls back)."""
    if _fallocate is None:
        return False
    if _fallocate(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


class FileBackend:
    """A volume file (e.g. a flat VMDK on a datastore) served as an export.

    Writes go straight to the file with ``pwrite`` (the page cache is shared, so several connections see
    each other's writes: the server advertises multi-conn). FUA is ``RWF_DSYNC``, FLUSH is ``fdatasync``.
    TRIM punches a hole (reads back as zeroes), so trimmed ranges are also zero on a replica.
    """

    accepts_views = True
    can_multi_conn = True

    def __init__(self, path: str | os.PathLike, name: str | None = None, read_only: bool = False):
        self.path = Path(path)
        self.name = name if name is not None else self.path.name
        self.read_only = read_only
        try:
            self._fd = os.open(self.path, os.O_RDONLY if read_only else os.O_RDWR)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open volume file {self.path}: {exc.strerror}; "
                          "check the path and that this user may read and write it") from exc
        self.size = os.fstat(self._fd).st_size

    def fileno(self) -> int:
        return self._fd

    def pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) < length:  # a file shorter than at open time: the missing tail reads as zeroes
            data += bytes(length - len(data))
        return data

    def pread_into(self, offset: int, buf: memoryview) -> None:
        done = pread_into(self._fd, offset, buf)
        if done < len(buf):  # a file shorter than at open time: the missing tail reads as zeroes
            buf[done:] = bytes(len(buf) - done)

    def pwrite(self, offset: int, data, fua: bool = False) -> None:
        flags = os.RWF_DSYNC if fua else 0
        done = os.pwritev(self._fd, [data], offset, flags)
        if done < len(data):
            view = memoryview(data)
            while done < len(view):
                done += os.pwritev(self._fd, [view[done:]], offset + done, flags)

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        return file_extents(self._fd, offset, length)

    def flush(self) -> None:
        os.fdatasync(self._fd)

    def trim(self, offset: int, length: int) -> None:
        if not _falloc(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length):
            self._write_zero_bytes(offset, length)

    def write_zeroes(self, offset: int, length: int, may_trim: bool = False) -> None:
        if may_trim and _falloc(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length):
            return
        if _falloc(self._fd, _FALLOC_FL_ZERO_RANGE | _FALLOC_FL_KEEP_SIZE, offset, length):
            return
        self._write_zero_bytes(offset, length)

    def _write_zero_bytes(self, offset: int, length: int) -> None:
        write_zeroes(self.pwrite, offset, length)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        return f"FileBackend({str(self.path)!r}, name={self.name!r}, size={self.size})"
