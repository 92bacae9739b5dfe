"""The split stream, IO filter -> local VRA: frame layout and encoding, shared by both ends (the filter's
`Splitter`, and the VRA's `SplitListener` in vra_appliance.protect.split_listener).

docs/IOFILTER.md is the reference for the wire format; docs/CONTRACTS.md section 2 for what a VRA sees.

Every frame is a 20-byte big-endian header, then ``length`` bytes of payload::

    u32 magic 0x5A53504C ("ZSPL") | u8 type | u8 flags (0) | u16 volume id length | u64 filter_seq | u32 length

    HELLO 1  filter -> VRA  payload JSON {"protocol": 1, "filter_id": str, "volumes": [str]};
                            filter_seq = the first sequence number the filter will use on this connection
    WRITE 2  filter -> VRA  payload volume id (utf-8) | u64 offset | data
    ZERO  3  filter -> VRA  payload volume id | u64 offset | u64 length   (WRITE_ZEROES or TRIM: reads as zero)
    MARK  4  filter -> VRA  payload JSON {"checkpoint_id": str, "volumes": [str]}
    ACK   5  VRA -> filter  no payload; filter_seq = every frame up to this one has been handled (cumulative)
    ACCEPT 6 VRA -> filter  payload JSON {"ring": bool}; only in answer to a HELLO that offered a ring

Over a unix socket the filter may offer a shared-memory ring in its HELLO (``"ring": {"bytes": N,
"layout": 1}``, the memfd attached as SCM_RIGHTS). A VRA that maps it answers ACCEPT ring true and then
reads every further frame from the ring (split_ring.py); the socket carries only doorbells (``\\0`` bytes,
filter -> VRA) and ACKs. ACCEPT ring false, or no answer (an older VRA), keeps the frames on the socket.

``filter_seq`` numbers every completed write, zero and mark of one filter, in completion order, and goes on
across reconnects. A gap means writes completed in between went to the filter's dirty map instead of the
stream (the VRA was absent, slow, or the queue was full): a bitmap sync must follow before the replica of
those volumes is consistent again.

Backpressure: the listener calls the handler on its connection thread and reads nothing more until the
handler returns, and it acknowledges only what the handler has returned from (cumulatively, once 4 MiB are
pending or the stream pauses for 2 ms). A slow VRA therefore fills
the socket, then the filter's bounded queue, and the filter records further writes in its dirty map. The
listener itself never buffers more than one receive buffer per filter.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from typing import Protocol

log = logging.getLogger(__name__)

MAGIC = 0x5A53504C
HELLO, WRITE, ZERO, MARK, ACK, ACCEPT = 1, 2, 3, 4, 5, 6
PROTOCOL_VERSION = 1
HEADER = struct.Struct(">IBBHQI")
OFFSET = struct.Struct(">Q")
ZERO_BODY = struct.Struct(">QQ")
MAX_FRAME_PAYLOAD = 16 * 1024 * 1024  # NBD writes are at most 4 MiB; anything bigger is a broken peer
ACK_BYTES = 4 * 1024 * 1024  # acknowledge at least every 4 MiB of frames...
ACK_DELAY_MS = 2  # ...or as soon as the filter pauses this long
MAX_HELLO = 1024 * 1024
RING_NAP_MS = 5  # a ring consumer that found the ring empty looks again this soon...
RING_QUIET_NAPS = 20  # ...and after this many empty looks sleeps until a doorbell...
RING_SLEEP_MS = 250  # ...or this long at most (a lost doorbell costs latency, never a hang)


class SplitHandler(Protocol):
    """What a VRA implements to receive split streams (docs/CONTRACTS.md section 2).

    Calls for one filter come from one thread, in stream order; calls for different filters may come
    concurrently from different threads. Blocking in a call is backpressure, not an error. An exception
    raised by a call drops that filter's connection (the filter then records unacknowledged writes in its
    dirty map).

    ``on_zero(filter_id, volume_id, offset, length, filter_seq)`` is optional: a handler without it gets
    a zeroed range as ``on_write`` calls of zero bytes (at most 4 MiB each, all with the same filter_seq).
    A handler with ``accepts_views = True`` gets ``data`` as a read-only memoryview into the receive buffer
    or the shared ring, valid only during the call (saves a copy when the handler compresses or forwards the
    data at once).
    """

    def on_hello(self, filter_id: str, volumes: list[str]) -> None: ...

    def on_write(self, filter_id: str, volume_id: str, offset: int, data: bytes, filter_seq: int) -> None: ...

    def on_mark(self, filter_id: str, checkpoint_id: str, volumes: list[str]) -> None: ...

    def on_disconnect(self, filter_id: str) -> None: ...


# -- encoding (used by the filter's splitter and by tests) ------------------------------------------------
def encode_hello(filter_id: str, volumes: list[str], first_seq: int, ring_bytes: int | None = None,
                 data_bytes: int | None = None) -> bytes:
    """HELLO; with ``ring_bytes`` it offers a ring (``data_bytes``: ring and slabs, see split_ring)."""
    doc = {"protocol": PROTOCOL_VERSION, "filter_id": filter_id, "volumes": volumes}
    if ring_bytes is not None:
        doc["ring"] = {"bytes": ring_bytes, "data_bytes": data_bytes or ring_bytes, "layout": 1}
    body = json.dumps(doc).encode()
    return HEADER.pack(MAGIC, HELLO, 0, 0, first_seq, len(body)) + body


def encode_accept(ring: bool) -> bytes:
    body = json.dumps({"ring": ring}).encode()
    return HEADER.pack(MAGIC, ACCEPT, 0, 0, 0, len(body)) + body


def write_prefix(volume: bytes, seq: int, offset: int, data_len: int) -> bytes:
    """Header and the payload's fixed part of a WRITE frame; the data follows it on the wire."""
    return (HEADER.pack(MAGIC, WRITE, 0, len(volume), seq, len(volume) + 8 + data_len)
            + volume + OFFSET.pack(offset))


def encode_zero(volume: bytes, seq: int, offset: int, length: int) -> bytes:
    return HEADER.pack(MAGIC, ZERO, 0, len(volume), seq, len(volume) + 16) + volume + ZERO_BODY.pack(offset, length)


def encode_mark(checkpoint_id: str, volumes: list[str], seq: int) -> bytes:
    body = json.dumps({"checkpoint_id": checkpoint_id, "volumes": volumes}).encode()
    return HEADER.pack(MAGIC, MARK, 0, 0, seq, len(body)) + body


def encode_ack(seq: int) -> bytes:
    return HEADER.pack(MAGIC, ACK, 0, 0, seq, 0)


def parse_address(address: str | tuple[str, int]) -> tuple[int, object]:
    """A split address -> (socket family, sockaddr). ``host:port`` is TCP; anything else a unix path."""
    if isinstance(address, tuple):
        return socket.AF_INET, (address[0], int(address[1]))
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and "/" not in address:
        return socket.AF_INET, (host or "127.0.0.1", int(port))
    return socket.AF_UNIX, os.fspath(address)
