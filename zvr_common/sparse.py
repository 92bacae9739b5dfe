"""Sparse files: which ranges of a file hold data (SEEK_DATA / SEEK_HOLE), for whoever must skip holes.

A hole reads as zeroes. A file system that cannot tell (EINVAL from SEEK_DATA) reports everything as data,
which is always a correct answer, only a slower one for the caller.
"""

from __future__ import annotations

import errno
import os


def data_ranges(fd: int, offset: int, length: int) -> list[tuple[int, int]]:
    """``(start, length)`` of the ranges of ``[offset, offset + length)`` of the file ``fd`` that hold data,
    in order; the gaps between them are holes."""
    end = offset + length
    out: list[tuple[int, int]] = []
    pos = offset
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                break
            if exc.errno == errno.EINVAL:  # the file system does not know
                return [(offset, length)] if length > 0 else []
            raise
        if start >= end:
            break
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        out.append((start, stop - start))
        pos = stop
    return out


def extents(fd: int, offset: int, length: int) -> list[tuple[int, bool]]:
    """``(length, is_hole)`` of consecutive pieces that make up ``[offset, offset + length)``."""
    out: list[tuple[int, bool]] = []
    pos = offset
    for start, n in data_ranges(fd, offset, length):
        if start > pos:
            out.append((start - pos, True))
        out.append((n, False))
        pos = start + n
    if pos < offset + length:
        out.append((offset + length - pos, True))
    return out
