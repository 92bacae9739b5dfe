"""The sender of one VPG's replication stream: connect, seal, send, resend, ack (step 3 of ``vpg``).

Owns the stream's half of a ``ProtectedVpg``: the records the aligner let out and not yet sealed, the stream
seqs, the resend buffer (sealed batches not yet acknowledged, in seq order), the connection state
(``connecting`` / ``ok`` / ``peer-journal-full`` / ``error`` / ``paused``, with back-off), the user's pause,
the seqs of the VRA's markers, and the sender thread (a ``Loop`` that runs ``sync_once``).

``sync_once`` connects when needed (Hello; the receiver's Welcome says where to resume), takes what the
aligner lets out, numbers it with the stream seq, seals batches of about ``batch_bytes`` or after
``batch_delay`` (a marker seals at once), compresses at the adaptive level (or not at all), keeps each batch
in the resend buffer and sends it. Acks drop batches from the buffer. After a lost connection or a refusal it
reconnects with back-off and resends everything unacknowledged, in order.

Locking: the sender has no lock of its own. It shares the VPG's one Condition (``cv``, given by the owner)
with the intake, so queueing a write, placing a marker, sealing and acknowledging are ordered by one lock.
The Condition is re-entrant (``threading.Condition()`` holds an RLock): the owner's callbacks may take it.

What the sender needs from its owner, as callables given at construction:

- ``drain()``: move what the aligner lets out into this sender (``enqueue``); called before each pass sends.
- ``on_reset(extents)``: the receiver refused with GAP and the buffered batches are dropped: their writes'
  extents ``(volume, offset, length)`` go to the dirty map, and the VPG needs a bitmap sync (called under cv).
- ``on_journal_lost()``: the recovery VRA lost records it had acknowledged: a delta sync is needed (under cv).
- ``align_blocked()``: the aligner waits for a filter's marker, so the sender looks again soon (under cv).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from vra_appliance.errors import ApplianceError, TransientError
from vra_appliance.protect.compression import AdaptiveLevel
from vra_appliance.protect.settings import ProtectCounters, ProtectSettings
from vra_appliance.stream.transport import GAP, Ack, Hello, Refused, Transport
from vra_appliance.stream.wire import CODEC_NONE, CODEC_ZSTD, Batch, StreamMarker, StreamWrite, seal
from zvr_common.loop import Loop

log = logging.getLogger(__name__)

_MARKER_COST = 64  # bytes a marker counts for in the buffer


@dataclass
class PendingWrite:
    """A filter's write, stamped on arrival, waiting in the aligner or the sender's queue."""

    timestamp_ns: int
    volume: str
    offset: int
    data: bytes


@dataclass
class PendingMarker:
    """The VRA's marker of a decided checkpoint, waiting in the aligner or the sender's queue."""

    timestamp_ns: int
    checkpoint_id: str
    tag: str
    consistent: bool
    participants: tuple[str, ...]


@dataclass
class _Sent:
    batch: Batch
    future: Future | None = None  # None: not sent on the current connection


class StreamSender:
    """See the module docstring. ``transport`` is already wrapped (throttle, metrics) by the caller."""

    def __init__(
        self,
        vpg: str,
        vra_id: str,
        transport: Transport,
        *,
        cv: threading.Condition,
        settings: ProtectSettings,
        level: AdaptiveLevel,
        counters: ProtectCounters,
        drain: Callable[[], None],
        on_reset: Callable[[Iterable[tuple[str, int, int]]], None],
        on_journal_lost: Callable[[], None],
        align_blocked: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.vpg = vpg
        self.vra_id = vra_id
        self.transport = transport
        self.settings = settings
        self.level = level
        self.counters = counters
        self._cv = cv
        self._drain = drain
        self._on_reset = on_reset
        self._on_journal_lost = on_journal_lost
        self._align_blocked = align_blocked
        self._clock, self._wall_ns = clock, wall_ns
        self._unsealed: deque[PendingWrite | PendingMarker] = deque()
        self._unsealed_bytes = 0
        self._unsealed_since: float | None = None
        self._buffer: deque[_Sent] = deque()  # sealed, not acknowledged, in seq order
        self._buffer_bytes = 0
        self._next_seq: int | None = None
        self.acked_seq = 0
        self.connected = False
        self.state = "connecting"
        self.error = ""
        self._retry_at = 0.0
        self._backoff = self.settings.backoff_min
        self._journal_epoch = ""  # the recovery journal's epoch of the last Welcome ("" = unknown)
        # Wall time of the last stream reset (GAP) or journal loss: a marker decided before it but sent after
        # it follows a journal that lacks the writes the reset dropped, so it goes out as not consistent.
        self._reset_ns = 0
        self.paused = False  # the user's pause: behave as if the link were down
        self._marker_seqs: dict[str, int] = {}
        # Woken by a kick (a write queued, an ack, a reconnect due); otherwise at the next deadline it
        # computes (a batch falls due, a retry), at most a second apart.
        self._loop = Loop(f"protect-{vpg}", 1.0, target=self._send_pass, delay=self._next_wakeup_locked,
                          max_backoff=1.0, logger=log)

    # -- for the owner (under cv unless said) ----------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._loop.stopping

    @property
    def next_seq(self) -> int | None:
        return self._next_seq

    @property
    def unacked_batches(self) -> int:
        return len(self._buffer)

    def held_bytes(self) -> int:
        """Bytes queued here or buffered unacknowledged (the aligner's are the owner's)."""
        return self._unsealed_bytes + self._buffer_bytes

    def enqueue(self, rec: PendingWrite | PendingMarker, nbytes: int) -> None:
        """Queue a record the aligner let out (or a marker placed directly) for the next batch."""
        if not self._unsealed:
            self._unsealed_since = self._clock()
        self._unsealed.append(rec)
        self._unsealed_bytes += nbytes

    def held_write_extents(self) -> list[tuple[str, int, int]]:
        """The writes buffered or queued here, as ``(volume, offset, length)``, oldest first."""
        out = [x for e in self._buffer for x in e.batch.write_extents]
        out += [(r.volume, r.offset, len(r.data)) for r in self._unsealed if isinstance(r, PendingWrite)]
        return out

    def oldest_timestamps_ns(self) -> list[int]:
        """Timestamps of the oldest write buffered and of the oldest queued (for the RPO), if any."""
        oldest = []
        if self._buffer:
            oldest.append(self._buffer[0].batch.oldest_timestamp_ns or self._wall_ns())
        first = next((r.timestamp_ns for r in self._unsealed if isinstance(r, PendingWrite)), None)
        if first is not None:
            oldest.append(first)
        return oldest

    def set_paused(self, paused: bool) -> None:
        """The user's pause (takes cv): see ``ProtectedVpg.set_paused``."""
        with self._cv:
            if paused == self.paused:
                return
            self.paused = paused
            if paused:
                self.state, self.error = "paused", ""
            else:
                self.state, self.error = "connecting", ""
                self._retry_at = 0.0
                self._backoff = self.settings.backoff_min
            self.kick()
        log.info("VPG %s: replication %s", self.vpg, "paused" if paused else "resumed")

    def marker_seq(self, checkpoint_id: str) -> int | None:
        with self._cv:
            return self._marker_seqs.get(checkpoint_id)

    def wait_marker_durable(self, checkpoint_id: str, timeout: float) -> bool:
        """Wait until the VRA's marker of the checkpoint is acknowledged by the recovery VRA."""
        deadline = self._clock() + timeout
        with self._cv:
            while True:
                seq = self._marker_seqs.get(checkpoint_id)
                if seq is not None and self.acked_seq >= seq:
                    return True
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))

    def kick(self) -> None:
        """Wake the waiters on cv and the sender (under cv)."""
        self._cv.notify_all()
        self._loop.wake()

    # -- the sender ------------------------------------------------------------------------------------------
    def sync_once(self) -> int:
        """One round of the sender: reconnect if due, collect acks, seal and send. Returns batches sent."""
        if self.paused:
            if self.connected:
                self._disconnect(TransientError("replication paused by the user"))
            with self._cv:
                if self.paused:
                    self.state, self.error = "paused", ""
            return 0
        self._collect()
        if not self.connected:
            if self._clock() < self._retry_at:
                return 0
            self._connect()
            if not self.connected:
                return 0
        self._drain()
        sent = self._resend()
        while not self._loop.stopping:
            records = self._take_batch()
            if records is None:
                break
            if not self._seal_and_send(records):
                break
            sent += 1
        self._collect()
        return sent

    def _window_full(self) -> bool:
        inflight = sum(e.batch.wire_bytes for e in self._buffer if e.future is not None)
        return inflight >= self.settings.max_inflight_bytes

    def _take_batch(self) -> list | None:
        """Number and take the records of the next batch, if one is due (under the byte/time limits)."""
        with self._cv:
            if not self._unsealed or self._next_seq is None or not self.connected:
                return None
            if self._window_full():
                return None
            has_marker = any(isinstance(r, PendingMarker) for r in self._unsealed)
            age = self._clock() - (self._unsealed_since or 0.0)
            if self._unsealed_bytes < self.settings.batch_bytes and age < self.settings.batch_delay and not has_marker:
                return None
            out = []
            size = 0
            while self._unsealed and (not out or size + _size(self._unsealed[0]) <= self.settings.batch_bytes):
                rec = self._unsealed.popleft()
                seq = self._next_seq
                self._next_seq += 1
                if isinstance(rec, PendingWrite):
                    out.append(StreamWrite(seq, rec.timestamp_ns, rec.volume, rec.offset, rec.data))
                    size += len(rec.data)
                    self._unsealed_bytes -= len(rec.data)
                else:
                    consistent = rec.consistent and rec.timestamp_ns > self._reset_ns
                    out.append(
                        StreamMarker(seq, rec.timestamp_ns, rec.checkpoint_id, rec.tag, consistent, rec.participants)
                    )
                    self._marker_seqs[rec.checkpoint_id] = seq
                    size += _MARKER_COST
            self._unsealed_since = self._clock() if self._unsealed else None
            return out

    def _seal_and_send(self, records: list) -> bool:
        t0 = time.perf_counter()
        codec = CODEC_ZSTD if self.settings.compression else CODEC_NONE
        batch = seal(self.vpg, records, codec=codec, level=self.level.level)
        t1 = time.perf_counter()
        entry = _Sent(batch)
        with self._cv:
            self._buffer.append(entry)
            self._buffer_bytes += batch.wire_bytes
            self.counters.batches += 1
            self.counters.raw_bytes_sent += batch.uncompressed_size
            self.counters.wire_bytes_sent += batch.wire_bytes
        ok = self._send(entry)
        t2 = time.perf_counter()
        self.counters.compress_s += t1 - t0
        self.counters.send_wait_s += t2 - t1
        if self.settings.compression:
            self.level.observe(t1 - t0, t2 - t1, t2 - t0)
        return ok

    def _send(self, entry: _Sent) -> bool:
        try:
            fut = self.transport.send(entry.batch)
        except ApplianceError as exc:
            self._disconnect(exc)
            return False
        with self._cv:
            entry.future = fut
        fut.add_done_callback(lambda _f: self._wake())
        return True

    def _wake(self) -> None:
        with self._cv:
            self.kick()

    def _resend(self) -> int:
        """Send the buffered batches not sent on this connection (after a reconnect), in order."""
        n = 0
        while True:
            with self._cv:
                entry = next((e for e in self._buffer if e.future is None), None)
            if entry is None or not self.connected:
                return n
            if not self._send(entry):
                return n
            n += 1
            self.counters.resent_batches += 1

    def _collect(self) -> None:
        """Drop acknowledged batches; on a failed future, disconnect."""
        failure: BaseException | None = None
        with self._cv:
            while self._buffer and self._buffer[0].future is not None and self._buffer[0].future.done():
                fut = self._buffer[0].future
                exc = fut.exception()
                if exc is not None:
                    failure = exc
                    break
                ack: Ack = fut.result()
                self._ack(ack.durable_seq)
        if failure is not None:
            self._disconnect(failure)

    def _ack(self, durable: int) -> None:
        if durable > self.acked_seq:
            self.acked_seq = durable
        while self._buffer and self._buffer[0].batch.last_seq <= self.acked_seq:
            done = self._buffer.popleft()
            self._buffer_bytes -= done.batch.wire_bytes
        self._cv.notify_all()

    def _connect(self) -> None:
        with self._cv:
            if self._next_seq is None:
                resume = 0
            elif self._buffer:
                resume = self._buffer[0].batch.first_seq
            else:
                resume = self._next_seq
        try:
            welcome = self.transport.open(Hello(self.vpg, self.vra_id, resume))
        except Refused as exc:
            if exc.reason == GAP:
                self._reset_stream(exc)
            self._disconnect(exc)
            return
        except ApplianceError as exc:
            self._disconnect(exc)
            return
        with self._cv:
            lost = self._journal_lost(welcome)
            if lost:
                log.warning("VPG %s: the recovery VRA lost records it had acknowledged (%s); delta sync needed",
                            self.vpg, lost)
                self._on_journal_lost()
                self.counters.recovery_journal_lost += 1
                self._reset_ns = self._wall_ns()
                # Its positions restarted: what this engine counted as acknowledged no longer is.
                self.acked_seq = welcome.durable_seq
                if self._next_seq is not None and self._next_seq <= welcome.durable_seq:
                    self._next_seq = welcome.durable_seq + 1
            if welcome.journal_epoch:
                self._journal_epoch = welcome.journal_epoch
            if self._next_seq is None:
                self._next_seq = welcome.durable_seq + 1
            self._ack(welcome.durable_seq)
            for e in self._buffer:
                e.future = None
            self.connected = True
            self.state, self.error = "ok", ""
            self._backoff = self.settings.backoff_min
            self.counters.reconnects += 1
            self.kick()

    def _journal_lost(self, welcome) -> str:
        """Why the Welcome says the recovery side lost acknowledged records, or "" (under ``_cv``).

        The epoch is explicit: it changes only when the journal is created or discarded. Without one (an older
        recovery VRA) a durable position below what was acknowledged says the same; a restart with the journal
        intact never goes below it, because a torn tail only cuts records that were never acknowledged."""
        epoch = welcome.journal_epoch
        if epoch and self._journal_epoch and epoch != self._journal_epoch:
            return f"journal epoch {self._journal_epoch} -> {epoch}"
        if welcome.durable_seq < self.acked_seq:
            return f"durable stream seq {welcome.durable_seq}, below the acknowledged {self.acked_seq}"
        return ""

    def _reset_stream(self, exc: Refused) -> None:
        """The receiver lacks records this engine no longer holds: start over from its position; what was
        buffered goes to the dirty map, and the VPG needs a sync."""
        with self._cv:
            log.warning("VPG %s: %s; restarting the stream, bitmap sync needed", self.vpg, exc)
            self._on_reset([x for e in self._buffer for x in e.batch.write_extents])
            self._buffer.clear()
            self._buffer_bytes = 0
            self._next_seq = None
            self._reset_ns = self._wall_ns()

    def _disconnect(self, exc: BaseException) -> None:
        try:
            self.transport.close()
        except ApplianceError:
            pass
        with self._cv:
            was = self.connected
            self.connected = False
            for e in self._buffer:
                e.future = None
            now = self._clock()
            if isinstance(exc, Refused):
                name = exc.reason_name
                self.counters.refusals[name] = self.counters.refusals.get(name, 0) + 1
                if exc.kind == "resend":
                    delay = 0.0
                elif exc.kind == "backoff":
                    delay = self._backoff
                    self._backoff = min(self._backoff * 2, self.settings.backoff_max)
                    self.state = "peer-journal-full"
                else:
                    delay = self.settings.permanent_backoff
                    self.state = "error"
                self.error = str(exc)
            else:
                delay = self._backoff
                self._backoff = min(self._backoff * 2, self.settings.backoff_max)
                self.state = "connecting"
                self.error = str(exc) if not isinstance(exc, TransientError) or was else self.error or str(exc)
            self._retry_at = now + delay
            self.kick()
        if was:
            log.info("VPG %s: stream to the recovery VRA ended: %s", self.vpg, exc)

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def _send_pass(self) -> None:
        try:
            self.sync_once()
        except Exception:
            self._disconnect(TransientError("sender failed"))
            raise  # the loop logs it

    def _next_wakeup_locked(self) -> float:
        with self._cv:
            return self._next_wakeup()

    def _next_wakeup(self) -> float:
        now = self._clock()
        waits = [1.0]
        if not self.connected and not self.paused:
            waits.append(max(0.0, self._retry_at - now))
        # A batch falls due after batch_delay; while disconnected or with a full window, a reconnect or an
        # ack wakes the sender instead (no polling).
        if self.connected and self._unsealed and self._unsealed_since is not None and not self._window_full():
            waits.append(max(0.0005, self._unsealed_since + self.settings.batch_delay - now))
        if self._align_blocked():
            waits.append(0.25)
        return min(waits)

    def stop(self) -> None:
        self._loop.stop(timeout=None)
        with self._cv:  # waiters for room or acks see the loop stopping
            self._cv.notify_all()
        getattr(self.transport, "shutdown", self.transport.close)()


def _size(rec: PendingWrite | PendingMarker) -> int:
    return len(rec.data) if isinstance(rec, PendingWrite) else _MARKER_COST
