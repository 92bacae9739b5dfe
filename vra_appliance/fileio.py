"""The appliance's one file-I/O module: positional reads and writes that finish what a short call left,
zero fill, the allocated ranges of a sparse file, and durable replacement of small state files.

Every helper takes a file descriptor and raises plain ``OSError`` (callers translate it where its meaning
is known: a journal, a sync, an NBD export). It imports only the standard library, so the pure cores
(recover/, sync/) and the IO filter may all use it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

ZERO_CHUNK = bytes(1 << 20)  # what write_zeroes writes at a time; one shared read-only buffer


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new, renamed, deleted files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content (a new file
    gets ``mode``, e.g. 0o600 for a private key)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def pread_exact(fd: int, length: int, offset: int, *, pad: bool = False) -> bytes:
    """Read exactly ``length`` bytes at ``offset``: fewer only at the end of the file, or, with ``pad``,
    the missing tail as zeroes."""
    data = os.pread(fd, length, offset)
    if len(data) < length and data:
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    if pad and len(data) < length:
        data += bytes(length - len(data))
    return data


def pread_into(fd: int, offset: int, buf) -> int:
    """Fill ``buf`` (a writable buffer) from ``offset``; returns the bytes read (less only at the end).
    Reading into a reused buffer spares the page faults of a fresh allocation per call."""
    view = memoryview(buf)
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a short write is continued, not an error)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_zeroes(pwrite: Callable[[int, memoryview], object], offset: int, length: int) -> None:
    """Zero ``[offset, offset + length)`` through ``pwrite(offset, data)`` (an export's own write, so a
    scratch overlay or a budget sees the zeroes as any other write), a chunk at a time."""
    zeros = memoryview(ZERO_CHUNK)
    end = offset + length
    while offset < end:
        n = min(len(zeros), end - offset)
        pwrite(offset, zeros[:n])
        offset += n


def data_ranges(fd: int, end: int, start: int = 0) -> Iterator[tuple[int, int]]:
    """(offset, length) of the allocated ranges of a sparse file within ``[start, end)`` (SEEK_DATA /
    SEEK_HOLE). A filesystem that cannot tell raises OSError EINVAL."""
    pos = start
    while pos < end:
        try:
            begin = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            raise
        if begin >= end:
            return
        stop = min(end, os.lseek(fd, begin, os.SEEK_HOLE))
        yield begin, stop - begin
        pos = stop
