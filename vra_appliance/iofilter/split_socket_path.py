"""The split stream's socket path (one of ``Splitter``'s bases): frames over the unix or TCP socket.

Without a ring, writes are framed onto the socket. A connection thread whose stream is idle (nothing queued,
no send in progress) sends its frames itself with one non-blocking ``sendmsg`` straight from its buffers
(``_send_inline``); otherwise, or for what the socket did not take, the bytes are copied into the queue,
which the sender thread drains in batches of one scatter-gather ``sendmsg`` each (``_pump``). The queue's
budget (``_charged`` against ``queue_bytes``) counts every byte not yet acknowledged by the VRA (queued and
sent-but-unacknowledged), so a VRA that stops reading or acknowledging fills it and further writes go to the
dirty map. One thread at a time has the right to write to the socket (``_sending``), which keeps frames in
seq order.

State and locking are the ``Splitter``'s (vra_appliance/iofilter/splitter.py): this class is one of its
bases, holds no state of its own and takes no lock of its own; every method runs under, or takes, the
splitter's one lock (``_lock`` / ``_cond``) exactly where the splitter did before the split.
"""

from __future__ import annotations

import socket

from vra_appliance.iofilter import split_protocol as sp

FRAME_COST = 64  # bytes charged per queued frame on top of its data (header, tuple)
_BATCH_BYTES = 1024 * 1024
_BATCH_FRAMES = 1024
_IOV_MAX = 1024


def _unsent(parts: list, sent: int) -> bytes:
    """The bytes of ``parts`` after the first ``sent``, copied once (the views die with the batch)."""
    for i, part in enumerate(parts):
        if sent < len(part):
            return b"".join([memoryview(part)[sent:], *parts[i + 1:]])
        sent -= len(part)
    return b""


def _sendmsg_all(sock: socket.socket, parts: list) -> int:
    """Send every buffer of ``parts`` (blocking, scatter-gather, no joining copy); returns the bytes sent."""
    total = 0
    views = [memoryview(p) for p in parts]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + _IOV_MAX])
        total += sent
        while sent:
            n = len(views[i])
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0
    return total


class SocketPath:
    """The socket half of ``Splitter`` (see the module docstring)."""

    def _stream_writes(self, writes: list) -> tuple[list, socket.socket, int] | None:
        """Number ``writes`` and charge them to the queue's budget, or mark them dirty (lock held, no ring).
        Returns ``(frames, socket, generation)`` when this thread now holds the right to send them inline,
        else None (nothing to send, or they were queued for the sender)."""
        stream = []
        seq = self._seq
        self._seq = seq + len(writes)
        charged = 0
        for volume, offset, data, *_slab in writes:
            n = len(data)
            if not self._connected or self._charged + charged + n + FRAME_COST > self.queue_bytes:
                self.stats["diverted_writes"] += 1
                self.stats["diverted_bytes"] += n
                self.dirty.add(volume, offset, n)
            else:
                stream.append((sp.WRITE, seq, volume, offset, n, data))
                charged += n + FRAME_COST
            seq += 1
        if not stream:
            return None
        self._charged += charged
        if self._sending or self._queue or self._head is not None:
            self._queue.extend(f[:5] + (bytes(f[5]),) for f in stream)
            if self._sender_waiting:
                self._cond.notify()
            return None
        self._sending = True
        self._inflight.append((stream[-1][1], charged, [f[:5] + (None,) for f in stream]))
        return stream, self._sock, self._gen

    def _send_inline(self, stream: list, sock: socket.socket, gen: int) -> None:
        """Send the frames ``_stream_writes`` gave this thread, without blocking, straight from the callers'
        buffers; what the socket did not take becomes the head the sender thread sends first."""
        parts = []
        vol_bytes, write_prefix = self._vol_bytes, sp.write_prefix
        for _kind, fseq, volume, offset, n, data in stream:
            parts.append(write_prefix(vol_bytes.get(volume) or volume.encode(), fseq, offset, n))
            parts.append(data)
        try:
            sent = sock.sendmsg(parts, (), socket.MSG_DONTWAIT) if len(parts) <= _IOV_MAX else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            with self._cond:
                self._sending = False
                self._cond.notify_all()
            self._disconnected(gen, f"send failed: {exc}")
            return
        total = sum(len(p) for p in parts)
        rest = _unsent(parts, sent) if sent < total else None
        with self._cond:
            self._sending = False
            if self._gen != gen:  # the connection broke meanwhile; the frames were folded into the dirty map
                self._cond.notify_all()
                return
            if rest is not None:  # the sender thread sends the rest before anything else
                self._head = rest
            self.stats["frames_sent"] += len(stream)
            self.stats["bytes_sent"] += total
            self.stats["sends"] += 1
            if (self._queue or self._head is not None) and self._sender_waiting:
                self._cond.notify()

    def _queue_zero(self, volume: str, offset: int, length: int) -> None:
        with self._lock:
            if self._ring is not None and self._connected:  # the ring had no room (or was attached meanwhile)
                put = False
            else:
                put = self._connected and self._charged + FRAME_COST <= self.queue_bytes
            seq = self._seq
            self._seq = seq + 1
            if put:
                self._queue.append((sp.ZERO, seq, volume, offset, length, None))
                self._charged += FRAME_COST
                if self._sender_waiting:
                    self._cond.notify()
                return
            self.stats["diverted_writes"] += 1
            self.stats["diverted_bytes"] += length
            self.dirty.add(volume, offset, length)

    def _pump(self, sock: socket.socket, gen: int) -> None:
        vol_bytes = self._vol_bytes
        write_prefix, encode_zero = sp.write_prefix, sp.encode_zero
        while True:
            with self._cond:
                while ((self._sending or (not self._queue and self._head is None))
                       and self._gen == gen and self._connected and not self._stopping):
                    self._sender_waiting = True
                    self._cond.wait()
                    self._sender_waiting = False
                if self._gen != gen or not self._connected or self._sending or (
                        not self._queue and self._head is None):
                    return
                self._sending = True
                parts = []
                if self._head is not None:
                    parts.append(self._head)
                    self._head = None
                queue = self._queue
                batch = []
                size = charged = 0
                while queue and size < _BATCH_BYTES and len(batch) < _BATCH_FRAMES:
                    frame = queue.popleft()
                    batch.append(frame)
                    size += frame[4]
                    charged += frame[4] + FRAME_COST if frame[0] == sp.WRITE else FRAME_COST
                if batch:
                    self._inflight.append((batch[-1][1], charged, batch))
            for kind, seq, volume, offset, length, payload in batch:
                if kind == sp.WRITE:
                    parts.append(write_prefix(vol_bytes.get(volume) or volume.encode(), seq, offset, length))
                    parts.append(payload)
                elif kind == sp.ZERO:
                    parts.append(encode_zero(vol_bytes.get(volume) or volume.encode(), seq, offset, length))
                else:
                    parts.append(payload)
            try:
                total = _sendmsg_all(sock, parts)
            except OSError as exc:
                with self._cond:
                    self._sending = False
                self._disconnected(gen, f"send failed: {exc}")
                return
            with self._cond:
                self._sending = False
                self.stats["frames_sent"] += len(batch)
                self.stats["bytes_sent"] += total
                self.stats["sends"] += 1
