"""Volumes for the sync tests: in memory (bytearray) and sparse files."""

from __future__ import annotations

import hashlib

import pytest


class MemVolume:
    """A VolumeReader and VolumeWriter over a bytearray; counts what was read."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.buf = bytearray(data)
        self.size = len(self.buf)
        self.reads: list[tuple[int, int]] = []

    def pread(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and offset + length <= self.size, (offset, length, self.size)
        self.reads.append((offset, length))
        return bytes(self.buf[offset:offset + length])

    def pwrite(self, offset: int, data: bytes) -> None:
        assert 0 <= offset and offset + len(data) <= self.size
        self.buf[offset:offset + len(data)] = data

    def digest(self) -> bytes:
        return hashlib.sha256(self.buf).digest()


def file_digest(path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


@pytest.fixture
def mem_volume():
    return MemVolume
