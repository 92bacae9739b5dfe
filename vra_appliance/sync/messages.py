"""The delta sync's messages between the protect side and the recovery side, with a byte encoding.

Protocol-independent: a transport (gRPC, the in-process one, a test's fake) carries these as opaque bytes,
so adding the delta sync to a wire protocol needs one ``bytes`` field per direction. The encoded sizes are
what the engine counts as checksum traffic.

    protect -> recovery   DeltaOpen          volume, size, parameters, salt
    protect -> recovery   GroupRequest       groups [first_group, first_group + count) of a volume
    recovery -> protect   GroupDigests       the group digests of groups [first_group, first_group + n)
    protect -> recovery   LeafRequest        the groups whose digests differed
    recovery -> protect   LeafDigests        the leaf digests of those groups
    protect -> recovery   CloseRequest       the sync of the volume is over

All integers are little-endian; a string is a u16 length and UTF-8 bytes. Each message starts with a
four-byte tag that names it and its version.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vra_appliance.errors import ChecksumListError, SyncParamsError
from vra_appliance.sync.checksums import DIGEST_SIZE, DeltaParams


class _Reader:
    def __init__(self, blob: bytes, what: str) -> None:
        self.blob, self.pos, self.what = memoryview(blob), 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.blob):
            raise ChecksumListError("?", f"{self.what} is truncated at byte {self.pos}")
        out = bytes(self.blob[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<H")
        return self.take(n).decode("utf-8")

    def end(self) -> None:
        if self.pos != len(self.blob):
            raise ChecksumListError("?", f"{self.what} has {len(self.blob) - self.pos} trailing bytes")


def _s(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def _tag(r: _Reader, tag: bytes) -> None:
    got = r.take(4)
    if got != tag:
        raise ChecksumListError("?", f"expected a {tag.decode()} message, got tag {got!r}")


@dataclass(frozen=True)
class DeltaOpen:
    vpg: str
    volume: str
    size: int
    params: DeltaParams

    TAG = b"ZDO1"

    def encode(self) -> bytes:
        p = self.params
        return (self.TAG + _s(self.vpg) + _s(self.volume) + struct.pack("<QII", self.size, p.block_size, p.fanout)
                + _s(p.algorithm) + struct.pack("<B", len(p.salt)) + p.salt)

    @classmethod
    def decode(cls, blob: bytes) -> DeltaOpen:
        r = _Reader(blob, "DeltaOpen")
        _tag(r, cls.TAG)
        vpg, volume = r.string(), r.string()
        size, block_size, fanout = r.unpack("<QII")
        algorithm = r.string()
        (n,) = r.unpack("<B")
        salt = r.take(n)
        r.end()
        try:
            params = DeltaParams(block_size, fanout, algorithm, salt)
        except SyncParamsError as exc:
            raise ChecksumListError(volume, str(exc)) from exc
        return cls(vpg, volume, size, params)


@dataclass(frozen=True)
class GroupDigests:
    volume: str
    block_size: int
    first_group: int
    digests: bytes

    TAG = b"ZGD1"

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def encode(self) -> bytes:
        return (self.TAG + _s(self.volume) + struct.pack("<IQI", self.block_size, self.first_group, self.count)
                + self.digests)

    @classmethod
    def decode(cls, blob: bytes) -> GroupDigests:
        r = _Reader(blob, "GroupDigests")
        _tag(r, cls.TAG)
        volume = r.string()
        block_size, first, count = r.unpack("<IQI")
        digests = r.take(count * DIGEST_SIZE)
        r.end()
        return cls(volume, block_size, first, digests)


@dataclass(frozen=True)
class GroupRequest:
    volume: str
    first_group: int
    count: int

    TAG = b"ZGR1"

    def encode(self) -> bytes:
        return self.TAG + _s(self.volume) + struct.pack("<QI", self.first_group, self.count)

    @classmethod
    def decode(cls, blob: bytes) -> GroupRequest:
        r = _Reader(blob, "GroupRequest")
        _tag(r, cls.TAG)
        volume = r.string()
        first, count = r.unpack("<QI")
        r.end()
        return cls(volume, first, count)


@dataclass(frozen=True)
class CloseRequest:
    volume: str

    TAG = b"ZCL1"

    def encode(self) -> bytes:
        return self.TAG + _s(self.volume)

    @classmethod
    def decode(cls, blob: bytes) -> CloseRequest:
        r = _Reader(blob, "CloseRequest")
        _tag(r, cls.TAG)
        volume = r.string()
        r.end()
        return cls(volume)


@dataclass(frozen=True)
class LeafRequest:
    volume: str
    groups: tuple[int, ...]

    TAG = b"ZLR1"

    def encode(self) -> bytes:
        return self.TAG + _s(self.volume) + struct.pack(f"<I{len(self.groups)}Q", len(self.groups), *self.groups)

    @classmethod
    def decode(cls, blob: bytes) -> LeafRequest:
        r = _Reader(blob, "LeafRequest")
        _tag(r, cls.TAG)
        volume = r.string()
        (n,) = r.unpack("<I")
        groups = r.unpack(f"<{n}Q")
        r.end()
        return cls(volume, tuple(groups))


@dataclass(frozen=True)
class LeafDigests:
    """Leaf digests of ``groups``, concatenated in that order (a short last group has fewer leaves)."""

    volume: str
    block_size: int
    groups: tuple[int, ...]
    digests: bytes

    TAG = b"ZLD1"

    def encode(self) -> bytes:
        n = len(self.groups)
        return (self.TAG + _s(self.volume) + struct.pack(f"<II{n}Q", self.block_size, n, *self.groups)
                + struct.pack("<I", len(self.digests) // DIGEST_SIZE) + self.digests)

    @classmethod
    def decode(cls, blob: bytes) -> LeafDigests:
        r = _Reader(blob, "LeafDigests")
        _tag(r, cls.TAG)
        volume = r.string()
        block_size, n = r.unpack("<II")
        groups = r.unpack(f"<{n}Q")
        (count,) = r.unpack("<I")
        digests = r.take(count * DIGEST_SIZE)
        r.end()
        return cls(volume, block_size, tuple(groups), digests)


MESSAGES = {cls.TAG: cls for cls in (DeltaOpen, GroupRequest, GroupDigests, LeafRequest, LeafDigests, CloseRequest)}


def decode(blob: bytes):
    """Any of the messages above, by its tag."""
    cls = MESSAGES.get(bytes(blob[:4]))
    if cls is None:
        raise ChecksumListError("?", f"unknown message tag {bytes(blob[:4])!r}")
    return cls.decode(blob)


def encoded_size(msg) -> int:
    """Bytes the message takes on the wire (its encoding; a transport's framing is not counted)."""
    if isinstance(msg, GroupDigests):  # hot path: skip building the bytes
        return 4 + 2 + len(msg.volume.encode()) + 16 + len(msg.digests)
    return len(msg.encode())
