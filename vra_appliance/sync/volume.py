"""What the syncs read and write: the ``VolumeReader`` protocol and a volume file that implements it.

A sync reads a volume through ``size`` and ``pread`` only, so the same engines run over a protected volume
file, over a replica volume, and over a point-in-time image (an NBD export backend of docs/CONTRACTS.md
section 1 has both). A reader may also offer ``data_ranges(offset, length)``: the parts that are allocated.
Holes are then neither read nor hashed; a reader without it is read whole.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vra_appliance import fileio
from vra_appliance.errors import TransientError


@runtime_checkable
class VolumeReader(Protocol):
    """A volume to read: ``pread`` returns exactly ``length`` bytes inside ``[0, size)``; errors are OSError."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...


class VolumeWriter(Protocol):
    """A volume to write (the recovery side's replica when a sync applies directly)."""

    size: int

    def pread_into(self, offset: int, buf) -> int:
        """Fill ``buf`` (a writable buffer) from ``offset``; returns the bytes read (less only at the end).
        Reading into a reused buffer spares the page faults of a fresh allocation per window."""
        ...

    def pwrite(self, offset: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Extent:
    """Bytes of a volume to send: ``data`` belongs at ``offset``."""

    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


def data_ranges(reader: VolumeReader, offset: int, length: int) -> list[tuple[int, int]]:
    """The allocated ``(offset, length)`` ranges of ``[offset, offset + length)``; all of it if unknown."""
    end = min(offset + length, reader.size)
    if end <= offset:
        return []
    fn = getattr(reader, "data_ranges", None)
    if fn is None:
        return [(offset, end - offset)]
    return fn(offset, end - offset)


def read_error(volume: str, offset: int, length: int, exc: OSError) -> TransientError:
    return TransientError(
        f"reading volume {volume or '?'} at {offset} (+{length}) failed: {exc.strerror or exc}; "
        "the sync stops and runs again when the volume is readable")


def read(reader: VolumeReader, offset: int, length: int, volume: str = "") -> bytes:
    """``reader.pread``, with OSError translated: a volume that cannot be read now makes the sync transient."""
    try:
        data = reader.pread(offset, length)
    except OSError as exc:
        raise read_error(volume, offset, length, exc) from exc
    if len(data) != length:
        raise TransientError(
            f"volume {volume or '?'} returned {len(data)} bytes at {offset} where {length} were asked "
            "(was it truncated?); the sync runs again")
    return data


def read_ranges(reader: VolumeReader, ranges, volume: str = "") -> Iterator[Extent]:
    """Read each ``(offset, length)`` and yield it as an Extent."""
    for offset, length in ranges:
        yield Extent(offset, read(reader, offset, length, volume))


class FileVolume:
    """A volume file (a flat VMDK extent, a raw image): a VolumeReader and VolumeWriter with hole detection."""

    def __init__(self, path: str | os.PathLike, *, writable: bool = False, size: int | None = None) -> None:
        self.path = os.fspath(path)
        self.read_only = not writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        if writable and size is not None:
            flags |= os.O_CREAT
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        if size is not None and writable and os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)
        self.size = os.fstat(self._fd).st_size

    def fileno(self) -> int:
        return self._fd

    def pread(self, offset: int, length: int) -> bytes:
        data = fileio.pread_exact(self._fd, length, offset)
        if len(data) < length:  # short reads happen on some filesystems; end of file is a real error
            raise OSError(errno.EIO, f"short read at {offset + len(data)} of {self.path}")
        return data

    def pread_into(self, offset: int, buf) -> int:
        return fileio.pread_into(self._fd, offset, buf)

    def pwrite(self, offset: int, data: bytes) -> None:
        fileio.pwrite_all(self._fd, data, offset)

    def data_ranges(self, offset: int, length: int) -> list[tuple[int, int]]:
        end = min(offset + length, self.size)
        try:
            return list(fileio.data_ranges(self._fd, end, offset))
        except OSError as exc:
            if exc.errno == errno.EINVAL and offset < end:  # the filesystem does not know: all data
                return [(offset, end - offset)]
            raise

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileVolume:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
