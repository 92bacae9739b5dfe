"""The NBD transmission phase of one connection: parse requests, call the backend, send replies.

Built for throughput in CPython: one thread per connection with a blocking socket, requests parsed in place
from one preallocated receive buffer (``recv_into``; a write's payload is handed to the backend as a view,
never copied), replies packed into one preallocated send buffer (read data lands there with ``preadv``).
Requests are served in order; replies are sent in one ``sendall`` when no complete request is left in the
receive buffer, so a client with 16 requests in flight costs about one recv and one send per 16.

A malformed request (bad magic) closes the connection; a bad argument (range past the end, unknown flag,
oversized payload) gets an error reply and the connection goes on. Nothing here is shared between
connections except the backend.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket

from vra_appliance.errors import NbdProtocolError
from vra_appliance.iofilter import block_status, native
from vra_appliance.iofilter import nbd_proto as p
from vra_appliance.iofilter.nbd_backend import ExportBackend

log = logging.getLogger(__name__)

_HDR = p.REQUEST.size
_RECV_SIZE = p.MAX_PAYLOAD + 256 * 1024  # one maximal write plus room to batch small requests behind it
_SHARED_RESET = 1024 * 1024  # a backend's receive buffer is renewed once this much of it was parsed
_SEND_SIZE = p.MAX_PAYLOAD + 256 * 1024


class ConnectionStats:
    """Counters of one connection; the server sums them per export (no lock on the IO path)."""

    __slots__ = ("reads", "writes", "bytes_read", "bytes_written", "flushes", "trims", "zeroes", "errors",
                 "block_status")

    def __init__(self) -> None:
        self.reads = self.writes = self.bytes_read = self.bytes_written = 0
        self.flushes = self.trims = self.zeroes = self.errors = self.block_status = 0

    def add(self, other: ConnectionStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Transmission:
    """Serves one negotiated connection until the client disconnects or the socket is shut down."""

    def __init__(self, sock: socket.socket, backend: ExportBackend, structured: bool,
                 stats: ConnectionStats | None = None, block_status: bool = False):
        """``block_status``: the client selected ``base:allocation`` (NBD_CMD_BLOCK_STATUS is served)."""
        self.sock = sock
        self.backend = backend
        self.structured = structured
        self.block_status = block_status and structured
        self.stats = stats or ConnectionStats()
        self._renew = getattr(backend, "renew_recv_buffer", None)
        self._release = getattr(backend, "release_recv_buffer", None)
        self._native = getattr(backend, "native", None)  # a native.ZVol: writes take the compiled loop
        if self._renew is None or self._release is None or self._native is None:
            self._renew = None  # the backend's receive buffers are for the compiled loop
        self._private: memoryview | None = None
        self._private_addr = 0
        self._shared = None  # the backend's receive buffer we are using, if any
        self._reset_at = _RECV_SIZE // 2 if self._renew is None else _SHARED_RESET
        self._rbuf = self._rview = self._use(self._renew(None) if self._renew is not None else None)
        self._sbuf = bytearray(_SEND_SIZE)
        self._sview = memoryview(self._sbuf)
        self._spos = 0
        self._pread_into = getattr(backend, "pread_into", None)
        self._views_ok = bool(getattr(backend, "accepts_views", False))

    # -- receive buffers -------------------------------------------------------------------------------
    def _use(self, shared) -> memoryview:
        """Receive into ``shared`` (a buffer from the backend's `renew_recv_buffer`) or our own memory."""
        self._shared = shared
        if shared is not None:
            return shared.view
        if self._private is None:
            self._private = memoryview(bytearray(_RECV_SIZE))
            if self._native is not None:
                self._private_addr = native.address(self._private)
        return self._private

    def _renew_buffer(self, start: int, end: int, need: int) -> None:
        """Go on receiving at the start of a buffer that holds ``need`` bytes, with the unparsed ``[start,
        end)`` moved there. Replies were flushed, so nothing in the old buffer is referred to by us any more.
        A backend's buffer too small for ``need`` (a large write) is left for our own memory."""
        old, view = self._shared, self._rview
        new = self._renew(old) if self._renew is not None else None
        if new is not None and len(new.view) < need:
            if new is not old:
                self._release(new)
            new = None
        if new is not None and new is old or new is None and old is None:
            view[:end - start] = view[start:end]  # the same buffer: move the rest to its start
            return
        target = self._use(new)
        target[:end - start] = view[start:end]
        if old is not None:
            self._release(old)  # only now: the rest is out of it
        self._rbuf = self._rview = target

    def release_buffers(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            self._rbuf = self._rview = memoryview(b"")  # the connection is over: nothing receives any more
            self._release(shared)

    # -- output ---------------------------------------------------------------------------------------
    def _flush_replies(self) -> None:
        if self._spos:
            self.sock.sendall(self._sview[:self._spos])
            self._spos = 0

    def _reserve(self, n: int) -> int:
        """Room for ``n`` bytes in the send buffer; returns the position to write at."""
        if self._spos + n > _SEND_SIZE:
            self._flush_replies()
        pos = self._spos
        self._spos = pos + n
        return pos

    def _simple(self, handle: int, error: int = 0) -> None:
        p.SIMPLE_REPLY.pack_into(self._sbuf, self._reserve(p.SIMPLE_REPLY.size), p.SIMPLE_REPLY_MAGIC,
                                 error, handle)

    def _read_error(self, handle: int, error: int, message: str) -> None:
        self.stats.errors += 1
        if not self.structured:
            self._simple(handle, error)  # no payload follows an error in a simple reply
            return
        msg = message.encode()[:1024]
        body = p.ERROR_CHUNK_BODY.pack(error, len(msg)) + msg
        pos = self._reserve(p.STRUCTURED_REPLY.size + len(body))
        p.STRUCTURED_REPLY.pack_into(self._sbuf, pos, p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE,
                                     p.REPLY_TYPE_ERROR, handle, len(body))
        self._sbuf[pos + p.STRUCTURED_REPLY.size:self._spos] = body

    def _error(self, handle: int, error: int) -> None:
        self.stats.errors += 1
        self._simple(handle, error)

    # -- main loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve requests until NBD_CMD_DISC or end of stream. Raises NbdProtocolError on garbage."""
        try:
            if self._native is not None:
                self._serve_native()
            else:
                self._serve()
        finally:
            self.release_buffers()

    def _serve(self) -> None:
        start = end = 0
        while True:
            if end - start < _HDR:
                start, end = self._refill(start, end, _HDR)
                if end < 0:
                    return
                continue
            start, end = self._one(start, end)
            if end < 0:
                return

    def _one(self, start: int, end: int) -> tuple[int, int]:
        """Serve the request whose header is complete at ``start``; (-1, -1): the connection is over."""
        view = self._rview
        magic, flags, cmd, handle, offset, length = p.REQUEST.unpack_from(view, start)
        if magic != p.REQUEST_MAGIC:
            raise NbdProtocolError(f"bad request magic {magic:#x}")
        if cmd == p.CMD_WRITE:
            if length > p.MAX_PAYLOAD:
                start, end = self._discard_payload(start + _HDR, end, length)
                self._error(handle, p.NBD_EINVAL)
                return start, end
            need = _HDR + length
            if end - start < need:
                start, end = self._refill(start, end, need)
                if end < 0:
                    return -1, -1  # the client dropped mid-write: nothing of the partial payload is written
                view = self._rview  # the refill may have moved on to another buffer
            data_start = start + _HDR
            start += need
            self._write(handle, flags, offset, length, view[data_start:start], data_start)
            return start, end
        start += _HDR
        if cmd == p.CMD_READ:
            self._read(handle, flags, offset, length)
        elif cmd == p.CMD_DISC:
            self._flush_replies()
            return -1, -1
        else:
            self._other(cmd, handle, flags, offset, length)
        return start, end

    def _serve_native(self) -> None:
        """The compiled loop (native/zwrite.c) serves plain writes with the GIL released and returns here for
        everything else: a staged hand-off (always first), more room in the receive buffer, a held gate, or
        one request for `_one` (READ, FLUSH, TRIM, WRITE_ZEROES, DISC, a write it refuses, bad magic)."""
        lib = native.lib()
        conn = native.ZConn(sock=self.sock.fileno(), sbuf=native.address(self._sbuf), scap=_SEND_SIZE,
                            vol=ctypes.addressof(self._native), reset_at=self._reset_at,
                            known_flags=p.KNOWN_CMD_FLAGS & ~p.CMD_FLAG_FAST_ZERO, fua_flag=p.CMD_FLAG_FUA,
                            max_payload=p.MAX_PAYLOAD)
        cp = ctypes.pointer(conn)
        stats, backend = self.stats, self.backend
        start = end = counted_writes = counted_bytes = 0
        while True:
            shared = self._shared
            if shared is not None:
                conn.rbuf, conn.rlen, conn.ring = shared.addr, len(shared.view), ctypes.addressof(shared.ring.z)
                conn.slab_pos, conn.slab_idx = shared.pos, shared.index
            else:
                conn.rbuf, conn.rlen, conn.ring, conn.slab_pos, conn.slab_idx = self._private_addr, len(self._rview), 0, 0, -1
            conn.start, conn.end, conn.spos = start, end, self._spos
            rc = lib.zconn_run(cp)
            start, end, self._spos = conn.start, conn.end, conn.spos
            stats.writes += conn.writes - counted_writes
            stats.bytes_written += conn.bytes - counted_bytes
            counted_writes, counted_bytes = conn.writes, conn.bytes
            if conn.nstaged or conn.locked:
                for handle, err in backend.hand_off(cp, self._rview, shared):
                    self._error(handle, p.nbd_error(err))
            if rc == native.RC_HANDOFF:
                continue
            if rc == native.RC_EOF:
                return
            if rc == native.RC_SOCKERR:
                raise OSError(conn.err, os.strerror(conn.err))
            if rc == native.RC_GATE:
                backend.wait_gate()
            elif rc == native.RC_REFILL:
                self._flush_replies()
                self._renew_buffer(start, end, conn.need)
                start, end = 0, end - start
            else:  # RC_PY
                start, end = self._one(start, end)
                if end < 0:
                    return

    def _refill(self, start: int, end: int, need: int) -> tuple[int, int]:
        """Make at least ``need`` bytes available from ``start``; (-1, -1) on end of stream.

        Replies go out only when the client has nothing more for us right now (a non-blocking recv finds the
        socket empty), or before parsed bytes in the buffer are reused.
        """
        sock = self.sock
        while end - start < need:
            if start == end and end > self._reset_at:
                self._flush_replies()
                self._renew_buffer(start, end, need)
                start = end = 0
            elif start + need > len(self._rview):
                self._flush_replies()
                self._renew_buffer(start, end, need)
                start, end = 0, end - start
            view = self._rview
            try:
                n = sock.recv_into(view[end:], 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._flush_replies()  # the client waits for these before it sends more
                n = sock.recv_into(view[end:])
            if n == 0:
                return -1, -1
            end += n
        return start, end

    def _discard_payload(self, start: int, end: int, length: int) -> tuple[int, int]:
        """Skip an oversized write's payload so the stream stays in sync; returns an emptied buffer."""
        have = min(end - start, length)
        length -= have
        start += have
        while length:
            n = self.sock.recv_into(self._rview[:min(length, len(self._rview))])
            if n == 0:
                raise ConnectionError("client closed the connection inside an oversized write")
            if n > length:  # the next request(s) arrived behind the payload
                self._rview[:n - length] = self._rview[length:n]
                return 0, n - length
            length -= n
        return start, end

    # -- commands -------------------------------------------------------------------------------------
    def _check(self, handle: int, flags: int, offset: int, length: int, writing: bool) -> bool:
        if flags & ~p.KNOWN_CMD_FLAGS or flags & p.CMD_FLAG_FAST_ZERO:
            self._error(handle, p.NBD_EINVAL)
            return False
        if writing and self.backend.read_only:
            self._error(handle, p.NBD_EPERM)
            return False
        if offset + length > self.backend.size:
            self._error(handle, p.NBD_ENOSPC if writing else p.NBD_EINVAL)
            return False
        return True

    def _write(self, handle: int, flags: int, offset: int, length: int, data: memoryview, start: int) -> None:
        if not self._check(handle, flags, offset, length, True):
            return
        fua = bool(flags & p.CMD_FLAG_FUA)
        if fua:
            self._flush_replies()  # a synchronous write is slow: do not hold earlier replies behind it
        try:
            self.backend.pwrite(offset, data if self._views_ok else bytes(data), fua)
        except OSError as exc:
            self._error(handle, p.nbd_error(exc.errno))
            return
        except Exception:
            log.exception("export %s: write at %d+%d failed", self.backend.name, offset, length)
            self._error(handle, p.NBD_EIO)
            return
        stats = self.stats
        stats.writes += 1
        stats.bytes_written += length
        self._simple(handle)

    def _read(self, handle: int, flags: int, offset: int, length: int) -> None:
        if length > p.MAX_PAYLOAD:
            self._read_error(handle, p.NBD_EINVAL, f"read of {length} bytes exceeds {p.MAX_PAYLOAD}")
            return
        if flags & ~p.KNOWN_CMD_FLAGS:
            self._read_error(handle, p.NBD_EINVAL, f"unknown command flags {flags:#x}")
            return
        if offset + length > self.backend.size:
            self._read_error(handle, p.NBD_EINVAL,
                             f"read {offset}+{length} is past the end of the export ({self.backend.size})")
            return
        head = p.OFFSET_DATA_HEAD.size if self.structured else p.SIMPLE_REPLY.size
        pos = self._reserve(head + length)
        try:
            target = self._sview[pos + head:pos + head + length]
            if self._pread_into is not None:
                self._pread_into(offset, target)
            else:
                target[:] = self.backend.pread(offset, length)
        except Exception as exc:
            self._spos = pos  # drop the reserved reply
            if not isinstance(exc, OSError):
                log.exception("export %s: read at %d+%d failed", self.backend.name, offset, length)
            self._read_error(handle, p.nbd_error(getattr(exc, "errno", None)), f"read failed: {exc}")
            return
        if self.structured:
            p.OFFSET_DATA_HEAD.pack_into(self._sbuf, pos, p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE,
                                         p.REPLY_TYPE_OFFSET_DATA, handle, 8 + length, offset)
        else:
            p.SIMPLE_REPLY.pack_into(self._sbuf, pos, p.SIMPLE_REPLY_MAGIC, 0, handle)
        self.stats.reads += 1
        self.stats.bytes_read += length

    def _other(self, cmd: int, handle: int, flags: int, offset: int, length: int) -> None:
        backend = self.backend
        try:
            if cmd == p.CMD_FLUSH:
                self._flush_replies()
                backend.flush()
                self.stats.flushes += 1
            elif cmd == p.CMD_TRIM:
                if not self._check(handle, flags, offset, length, True):
                    return
                if length:
                    backend.trim(offset, length)
                    if flags & p.CMD_FLAG_FUA:
                        backend.flush()
                self.stats.trims += 1
            elif cmd == p.CMD_WRITE_ZEROES:
                if not self._check(handle, flags, offset, length, True):
                    return
                if length:
                    backend.write_zeroes(offset, length, may_trim=not flags & p.CMD_FLAG_NO_HOLE)
                    if flags & p.CMD_FLAG_FUA:
                        backend.flush()
                self.stats.zeroes += 1
            elif cmd == p.CMD_BLOCK_STATUS and self.block_status:
                self._block_status(handle, flags, offset, length)
                return
            else:  # CACHE, BLOCK_STATUS without a metadata context negotiated, unknown commands
                self._error(handle, p.NBD_EINVAL)
                return
        except OSError as exc:
            self._error(handle, p.nbd_error(exc.errno))
            return
        except Exception:
            log.exception("export %s: command %d at %d+%d failed", backend.name, cmd, offset, length)
            self._error(handle, p.NBD_EIO)
            return
        self._simple(handle)

    def _block_status(self, handle: int, flags: int, offset: int, length: int) -> None:
        if flags & ~p.KNOWN_CMD_FLAGS:
            self._read_error(handle, p.NBD_EINVAL, f"unknown command flags {flags:#x}")
            return
        if not length or offset + length > self.backend.size:
            self._read_error(handle, p.NBD_EINVAL, f"block status of {offset}+{length}: the range must be "
                                                   f"non-empty and inside the export ({self.backend.size})")
            return
        extents = block_status.extents_of(self.backend, offset, length)  # OSError: an error chunk
        reply = block_status.status_reply(handle, extents, length, bool(flags & p.CMD_FLAG_REQ_ONE))
        pos = self._reserve(len(reply))
        self._sbuf[pos:pos + len(reply)] = reply
        self.stats.block_status += 1
