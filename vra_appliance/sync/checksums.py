"""Block checksums for the delta sync: the parameters both sides agree on, the hashing, and the comparison.

Pure: no file or network I/O. A volume is cut into blocks of ``block_size`` bytes (the last one may be
shorter); each block has a *leaf* digest. Leaves are grouped by ``fanout``; each group has a *group* digest,
the hash of its leaves. The recovery side sends group digests first and leaf digests only for the groups
that differ, so a volume with few changed regions costs few checksum bytes (the measurement is in
docs/SYNC.md).

Digests are SHA-256 truncated to 128 bits, salted with a random per-sync ``salt`` the protect side picks:
SHA-256 has CPU instructions here (1.5 GB/s per core, twice BLAKE2b) and is collision resistant, and the salt
keeps a guest from planting two blocks that collide (a non-cryptographic hash such as xxh3 would let it make
the replica silently differ). ``hashlib`` releases the GIL while hashing a block, so threads scale.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

from vra_appliance.errors import ChecksumListError, SyncParamsError

ALGORITHM = "sha256-128"
ALGORITHMS = (ALGORITHM,)
DIGEST_SIZE = 16
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 1024 * 1024
# Chosen by measurement (docs/SYNC.md, "Block size"): on 1 % scattered 4 KiB changes, 4 KiB blocks send the
# fewest bytes; with groups of 16 leaves the checksum traffic is a quarter of the one-level list's.
DEFAULT_BLOCK_SIZE = 4096
DEFAULT_FANOUT = 16
MAX_FANOUT = 4096
_GROUP_PREFIX = b"G"  # domain separation: a group digest is never equal to a leaf digest by construction


@dataclass(frozen=True)
class DeltaParams:
    """What both sides of one delta sync must agree on."""

    block_size: int = DEFAULT_BLOCK_SIZE
    fanout: int = DEFAULT_FANOUT
    algorithm: str = ALGORITHM
    salt: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        bs = self.block_size
        if not (MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE) or bs & (bs - 1):
            raise SyncParamsError(
                f"delta sync block size {bs} is not supported: use a power of two from {MIN_BLOCK_SIZE} "
                f"to {MAX_BLOCK_SIZE} bytes (default {DEFAULT_BLOCK_SIZE})")
        if not (1 <= self.fanout <= MAX_FANOUT):
            raise SyncParamsError(
                f"delta sync fanout {self.fanout} is not supported: use 1 to {MAX_FANOUT} (default {DEFAULT_FANOUT})")
        if self.algorithm not in ALGORITHMS:
            raise SyncParamsError(
                f"checksum algorithm {self.algorithm!r} is not supported by this VRA (it knows {list(ALGORITHMS)}); "
                "upgrade the older VRA")
        if len(self.salt) > 64:
            raise SyncParamsError(f"delta sync salt of {len(self.salt)} bytes is too long (at most 64)")

    @property
    def group_size(self) -> int:
        return self.block_size * self.fanout

    def blocks(self, size: int) -> int:
        return -(-size // self.block_size)

    def groups(self, size: int) -> int:
        return -(-size // self.group_size)


class Hasher:
    """Leaf and group digests under one sync's parameters (salted)."""

    def __init__(self, params: DeltaParams) -> None:
        self.params = params
        self._base = hashlib.sha256(params.salt)

    def leaf(self, block) -> bytes:
        h = self._base.copy()
        h.update(block)
        return h.digest()[:DIGEST_SIZE]

    def leaves(self, buf, length: int | None = None) -> bytes:
        """Concatenated leaf digests of ``buf[:length]`` cut into blocks (the last one may be short)."""
        mv = memoryview(buf)
        n = len(mv) if length is None else length
        bs = self.params.block_size
        base = self._base
        out = bytearray()
        for i in range(0, n, bs):
            h = base.copy()
            h.update(mv[i:min(i + bs, n)])
            out += h.digest()[:DIGEST_SIZE]
        return bytes(out)

    def zero_leaf(self, length: int | None = None) -> bytes:
        """The leaf digest of an all-zero block (a hole), without hashing it each time."""
        return _zero_leaf(self.params.salt, self.params.block_size if length is None else length)

    def groups(self, leaves: bytes) -> bytes:
        """Concatenated group digests of concatenated leaf digests (``fanout`` leaves per group)."""
        step = self.params.fanout * DIGEST_SIZE
        base = self._base
        out = bytearray()
        mv = memoryview(leaves)
        for i in range(0, len(leaves), step):
            h = base.copy()
            h.update(_GROUP_PREFIX)
            h.update(mv[i:i + step])
            out += h.digest()[:DIGEST_SIZE]
        return bytes(out)


@lru_cache(maxsize=64)
def _zero_leaf(salt: bytes, length: int) -> bytes:
    h = hashlib.sha256(salt)
    h.update(bytes(length))
    return h.digest()[:DIGEST_SIZE]


def split_digests(blob: bytes, volume: str, expected: int) -> None:
    """Check that ``blob`` holds exactly ``expected`` digests, or raise ChecksumListError."""
    if len(blob) % DIGEST_SIZE:
        raise ChecksumListError(volume, f"{len(blob)} bytes is not a whole number of {DIGEST_SIZE}-byte digests")
    if len(blob) != expected * DIGEST_SIZE:
        raise ChecksumListError(volume, f"expected {expected} digests, got {len(blob) // DIGEST_SIZE}")


def differing(mine: bytes, theirs: bytes, stride: int = 64) -> list[int]:
    """Indexes of the digests that differ between two equally long digest lists.

    Compares ``stride`` digests at a time (one memcmp) and looks inside only the spans that differ, so two
    mostly equal lists of a million digests compare in milliseconds.
    """
    if len(mine) != len(theirs):
        raise ValueError("digest lists of different lengths")
    out: list[int] = []
    span = stride * DIGEST_SIZE
    for start in range(0, len(mine), span):
        end = start + span
        if mine[start:end] == theirs[start:end]:
            continue
        for i in range(start, min(end, len(mine)), DIGEST_SIZE):
            if mine[i:i + DIGEST_SIZE] != theirs[i:i + DIGEST_SIZE]:
                out.append(i // DIGEST_SIZE)
    return out


def block_ranges(indexes: list[int], block_size: int, size: int, max_len: int = 1024 * 1024) -> list[tuple[int, int]]:
    """Sorted block indexes -> ``(offset, length)`` ranges, adjacent blocks coalesced, clipped to ``size``,
    each at most ``max_len`` bytes (rounded down to whole blocks, at least one)."""
    per = max(1, max_len // block_size)
    out: list[tuple[int, int]] = []
    run_start = run_len = 0
    for idx in indexes:
        if run_len and idx == run_start + run_len and run_len < per:
            run_len += 1
            continue
        if run_len:
            out.append(_clip(run_start, run_len, block_size, size))
        run_start, run_len = idx, 1
    if run_len:
        out.append(_clip(run_start, run_len, block_size, size))
    return out


def _clip(first: int, count: int, block_size: int, size: int) -> tuple[int, int]:
    off = first * block_size
    return off, min(count * block_size, size - off)
