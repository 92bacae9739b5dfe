"""The VRA's end of the split stream: `SplitListener` accepts IO filter connections and hands each frame
to a `SplitHandler` (the protect side); `FrameReader` reads one connection, from its socket or from the
shared-memory ring the filter offered.

The frame layout, its encoders and the tunables (ACK pacing, ring naps) are the filter's and the VRA's
common ground and live in ``vra_appliance.iofilter.split_protocol`` (docs/IOFILTER.md); this module owns
only the receiving side: backpressure by not reading while the handler runs, cumulative ACKs, and the
ring consumer.
"""

from __future__ import annotations

import array
import json
import logging
import os
import select
import socket
import threading

from vra_appliance.errors import RingCorrupt, SplitProtocolError
from vra_appliance.iofilter import split_protocol as sp
from vra_appliance.iofilter import split_ring as sr
from zvr_common.sockserver import StreamServer

log = logging.getLogger(__name__)

_RECV_SIZE = sp.MAX_FRAME_PAYLOAD + sp.HEADER.size + 65536 + 1024 * 1024
_ZERO_CHUNK = 4 * 1024 * 1024


class SplitListener:
    """Accepts IO filter connections on ``address`` and feeds their frames to ``handler``.

    ``start()`` binds and returns; ``stop()`` closes the listener and every filter connection (each gets
    ``on_disconnect``). ``address`` is the bound address (a TCP port 0 is resolved after ``start()``).
    """

    def __init__(self, address: str | tuple[str, int], handler: sp.SplitHandler, accept_rings: bool = True):
        self.handler = handler
        self.accept_rings = accept_rings
        _family, sockaddr = sp.parse_address(address)
        self.address: str | tuple[str, int] = address
        self._server = StreamServer(sockaddr, self._serve, name="split", what="IO filters")

    def start(self) -> None:
        self._server.start()
        if not self._server.is_unix:
            self.address = self._server.address

    def stop(self) -> None:
        self._server.stop()

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader(conn, self.handler, self.accept_rings)
        try:
            reader.run()
        except SplitProtocolError as exc:
            log.warning("split stream from filter %s dropped: %s", reader.filter_id, exc)
        except OSError as exc:
            log.debug("split stream from filter %s ended: %s", reader.filter_id, exc)
        except Exception:
            log.exception("split handler failed for filter %s; dropping its connection", reader.filter_id)
        finally:
            conn.close()
            if reader.filter_id is not None:
                try:
                    self.handler.on_disconnect(reader.filter_id)
                except Exception:
                    log.exception("on_disconnect failed for filter %s", reader.filter_id)


class FrameReader:
    """One filter connection: HELLO (and the ring offer), then frames from the socket or from the ring, each
    handed to the handler and acknowledged."""

    def __init__(self, conn: socket.socket, handler: sp.SplitHandler, accept_rings: bool = True):
        self.conn = conn
        self.handler = handler
        self.accept_rings = accept_rings
        self.filter_id: str | None = None
        self.ring = None  # a sr.RingReader once the filter's ring was accepted
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._volumes: dict[bytes, str] = {}
        self._on_zero = getattr(handler, "on_zero", None)
        self._views = bool(getattr(handler, "accepts_views", False))
        self._poll = None

    def run(self) -> None:
        try:
            start, end = self._hello()
            if self.ring is not None:
                if start != end:
                    raise SplitProtocolError("frames on the socket after a ring was accepted")
                self._run_ring()
            else:
                self._run_socket(start, end)
        finally:
            if self.ring is not None:
                self.ring.close()

    # -- HELLO ------------------------------------------------------------------------------------------
    def _hello(self) -> tuple[int, int]:
        """Read up to the end of the HELLO frame (with any descriptor sent along) and answer a ring offer.
        Returns what of the buffer is left after the HELLO (frames behind it, socket mode)."""
        fds: list[int] = []
        try:
            end = 0
            while True:
                if end >= sp.HEADER.size:
                    magic, ftype, _flags, _vlen, _seq, length = sp.HEADER.unpack_from(self._buf, 0)
                    if magic != sp.MAGIC:
                        raise SplitProtocolError(f"bad frame magic {magic:#x}")
                    if ftype != sp.HELLO:
                        raise SplitProtocolError(f"frame type {ftype} before HELLO")
                    if length > sp.MAX_HELLO:
                        raise SplitProtocolError(f"HELLO of {length} bytes exceeds the limit")
                    if end >= sp.HEADER.size + length:
                        break
                    if len(self._buf) < sp.HEADER.size + length:
                        self._grow(sp.HEADER.size + length)
                n = self._recv_fds(self._view[end:], fds)
                if n == 0:
                    raise OSError("filter closed the connection before its HELLO")
                end += n
            doc = json.loads(bytes(self._view[sp.HEADER.size:sp.HEADER.size + length]))
            if doc.get("protocol") != sp.PROTOCOL_VERSION:
                raise SplitProtocolError(f"filter speaks split protocol {doc.get('protocol')}, "
                                         f"this VRA speaks {sp.PROTOCOL_VERSION}: upgrade the older side")
            self.filter_id = str(doc["filter_id"])
            offer = doc.get("ring")
            if offer is not None:
                self.ring = self._map_ring(offer, fds)
                self.conn.sendall(sp.encode_accept(self.ring is not None))
            self.handler.on_hello(self.filter_id, list(doc.get("volumes", [])))
            return sp.HEADER.size + length, end
        finally:
            for fd in fds:  # whatever was not taken over by the ring
                os.close(fd)

    def _recv_fds(self, into: memoryview, fds: list[int]) -> int:
        anc_size = socket.CMSG_SPACE(4 * array.array("i").itemsize)
        n, ancdata, _flags, _addr = self.conn.recvmsg_into([into], anc_size)
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(data[:len(data) - len(data) % got.itemsize])
                fds.extend(got)
        return n

    def _map_ring(self, offer: dict, fds: list[int]):
        if not (self.accept_rings and sr.supported()) or len(fds) != 1 or offer.get("layout") != 1:
            return None
        try:
            return sr.RingReader(fds.pop(), int(offer.get("bytes", 0)), int(offer.get("data_bytes", 0)))
        except (OSError, ValueError, RingCorrupt) as exc:
            log.warning("filter %s offered a split ring that cannot be used (%s); frames stay on the socket",
                        self.filter_id, exc)
            return None

    def _grow(self, size: int) -> None:
        buf = bytearray(size)
        buf[:len(self._buf)] = self._buf
        self._view.release()
        self._buf, self._view = buf, memoryview(buf)

    # -- frames from the socket -------------------------------------------------------------------------
    def _run_socket(self, start: int, end: int) -> None:
        self._grow(_RECV_SIZE)
        buf, view, unpack = self._buf, self._view, sp.HEADER.unpack_from
        handled = acked = -1
        unacked_bytes = 0
        while True:
            need = sp.HEADER.size
            if end - start >= sp.HEADER.size:
                magic, ftype, _flags, vlen, seq, length = unpack(buf, start)
                if magic != sp.MAGIC:
                    raise SplitProtocolError(f"bad frame magic {magic:#x}")
                if length > sp.MAX_FRAME_PAYLOAD + 65536:
                    raise SplitProtocolError(f"frame of {length} bytes exceeds the limit")
                need += length
            if end - start < need:
                # Everything parsed so far was handled. Acknowledge it once 4 MiB are pending or the filter
                # has paused for 2 ms: an ACK per filter batch would cost both sides a wakeup per batch.
                if handled > acked and (unacked_bytes >= sp.ACK_BYTES or not self._readable(sp.ACK_DELAY_MS)):
                    self.conn.sendall(sp.encode_ack(handled))
                    acked = handled
                    unacked_bytes = 0
                if start == end:
                    start = end = 0
                elif start + need > len(buf) or start > len(buf) // 2:
                    view[:end - start] = view[start:end]
                    start, end = 0, end - start
                n = self.conn.recv_into(view[end:])
                if n == 0:
                    return
                end += n
                continue
            body = start + sp.HEADER.size
            start = body + length
            unacked_bytes += length
            if ftype == sp.WRITE:
                if length < vlen + 8:
                    raise SplitProtocolError(f"WRITE frame with volume id length {vlen} and payload {length}")
                volume = self._volume(bytes(view[body:body + vlen]))
                (offset,) = sp.OFFSET.unpack_from(buf, body + vlen)
                data = view[body + vlen + 8:start]
                self.handler.on_write(self.filter_id, volume, offset, data.toreadonly() if self._views
                                      else bytes(data), seq)
            else:
                self._other(ftype, buf, body, start, vlen, seq)
            handled = seq

    def _other(self, ftype: int, buf, body: int, end: int, vlen: int, seq: int) -> None:
        """A ZERO or MARK frame whose payload is ``buf[body:end]``; anything else is a protocol error."""
        if ftype == sp.ZERO:
            if end - body != vlen + 16:
                raise SplitProtocolError(f"ZERO frame with volume id length {vlen} and payload {end - body}")
            volume = self._volume(bytes(buf[body:body + vlen]))
            offset, zlen = sp.ZERO_BODY.unpack_from(buf, body + vlen)
            self._zero(volume, offset, zlen, seq)
        elif ftype == sp.MARK:
            doc = json.loads(bytes(buf[body:end]))
            self.handler.on_mark(self.filter_id, doc["checkpoint_id"], list(doc.get("volumes", [])))
        elif ftype == sp.HELLO:
            raise SplitProtocolError("a second HELLO on one connection")
        else:
            raise SplitProtocolError(f"unknown frame type {ftype}")

    # -- frames from the ring -----------------------------------------------------------------------------
    def _run_ring(self) -> None:
        """Consume the ring in place: handle every published frame (REF data read in its slab), publish the
        tail every 16 frames and at the end of each batch, and when the ring is empty nap (sp.RING_NAP_MS) or,
        once quiet, sleep until a doorbell. ACK when the whole shared memory's worth of data was handled since
        the last ACK, or after a nap that found nothing (the filter needs ACKs only to see it drained: it
        reads the tail for room, and an ACK wakes one of its threads)."""
        ring, conn = self.ring, self.conn
        data, view, size, data_size = ring.data, ring.view, ring.size, ring.data_size
        unpack, hsize, align = sp.HEADER.unpack_from, sp.HEADER.size, sr.ALIGN - 1
        ref_unpack, ref_size, offset_unpack = sr.REF_BODY.unpack_from, sr.REF_BODY.size, sp.OFFSET.unpack_from
        magic_ok, pad, ref, write = sp.MAGIC, sr.PAD, sr.REF, sp.WRITE
        on_write, filter_id, views, volumes = self.handler.on_write, self.filter_id, self._views, self._volumes
        fence = threading.Lock()
        ack_bytes = max(sp.ACK_BYTES, data_size)  # the filter reads the tail for room; ACKs only report progress
        tail = frames = handled = acked = unacked = quiet = 0
        while True:
            head, rewound_at, rewound_to = ring.head()
            if tail == rewound_at and head >= rewound_to:  # the filter started over at 0 (the ring was empty)
                tail = rewound_to
                ring.consumed(tail, handled, frames)
            if head == tail:
                if handled > acked and (quiet or unacked >= ack_bytes):
                    conn.sendall(sp.encode_ack(handled))
                    acked, unacked = handled, 0
                mode = sr.SLEEP if quiet >= sp.RING_QUIET_NAPS else sr.NAP
                ring.set_state(mode)
                with fence:  # a full fence between publishing the state and reading head (see split_ring)
                    pass
                if ring.head()[0] == tail and not self._doorbell(sp.RING_SLEEP_MS if mode == sr.SLEEP else sp.RING_NAP_MS):
                    return
                ring.set_state(sr.AWAKE)
                quiet += 1
                continue
            if head < tail or head - tail > size or head & align:
                raise SplitProtocolError(f"ring head {head} does not follow tail {tail}")
            quiet = 0
            while tail < head:
                pos = tail % size
                magic, ftype, _flags, vlen, seq, length = unpack(data, pos)
                if magic != magic_ok:
                    raise SplitProtocolError(f"bad frame magic {magic:#x} at ring position {pos}")
                if ftype == pad:
                    tail += size - pos
                    continue
                body = pos + hsize
                end = body + length
                if end > size:
                    raise SplitProtocolError(f"ring frame at {pos} of {length} bytes runs past the end")
                if ftype == ref:  # the data is where the filter received it, in a slab
                    if length != vlen + ref_size:
                        raise SplitProtocolError(f"REF frame with volume id length {vlen} and payload {length}")
                    raw = data[body:body + vlen]
                    volume = volumes.get(raw) or self._volume(raw)
                    offset, dpos, n = ref_unpack(data, body + vlen)
                    if dpos < size or dpos + n > data_size:
                        raise SplitProtocolError(f"REF frame to {dpos}+{n} outside the slabs")
                    chunk = view[dpos:dpos + n]
                    on_write(filter_id, volume, offset, chunk if views else bytes(chunk), seq)
                    unacked += n
                elif ftype == write:
                    if length < vlen + 8:
                        raise SplitProtocolError(f"WRITE frame with volume id length {vlen} and payload {length}")
                    raw = data[body:body + vlen]
                    volume = volumes.get(raw) or self._volume(raw)
                    (offset,) = offset_unpack(data, body + vlen)
                    chunk = view[body + vlen + 8:end]
                    on_write(filter_id, volume, offset, chunk if views else bytes(chunk), seq)
                    unacked += length
                else:
                    self._other(ftype, data, body, end, vlen, seq)
                tail += (end - pos + align) & ~align
                frames += 1
                handled = seq
                if not frames & 15:  # the filter needs room only when the ring fills: publish now and then
                    ring.consumed(tail, seq, frames)
                    if unacked >= ack_bytes:
                        conn.sendall(sp.encode_ack(handled))
                        acked, unacked = handled, 0
            ring.consumed(tail, handled, frames)

    def _doorbell(self, timeout_ms: int) -> bool:
        """Wait for a doorbell (or ``timeout_ms``); False when the filter closed the connection."""
        if not self._readable(timeout_ms):
            return True
        chunk = self.conn.recv(4096, socket.MSG_DONTWAIT)
        if not chunk:
            return False
        if chunk.count(0) != len(chunk):
            raise SplitProtocolError("frames on the socket after a ring was accepted")
        return True

    # -- helpers ------------------------------------------------------------------------------------------
    def _readable(self, timeout_ms: int) -> bool:
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.conn, select.POLLIN)
        return bool(self._poll.poll(timeout_ms))

    def _volume(self, raw: bytes) -> str:
        name = self._volumes.get(raw)
        if name is None:
            name = self._volumes[raw] = raw.decode()
        return name

    def _zero(self, volume: str, offset: int, length: int, seq: int) -> None:
        if self._on_zero is not None:
            self._on_zero(self.filter_id, volume, offset, length, seq)
            return
        end = offset + length
        while offset < end:
            n = min(_ZERO_CHUNK, end - offset)
            self.handler.on_write(self.filter_id, volume, offset, bytes(n), seq)
            offset += n
