"""Runs a protected VPG's syncs into its replication stream: ``start()`` / ``stop()`` / ``sync_once()``.

The engines (initial, delta, bitmap) say *what* to send; this says *when* and *where*:

- it takes the VPG's delta need (``VpgLink.take_delta_need``: the recovery side lost records it had
  acknowledged, its journal was discarded) and bitmap need (``VpgLink.take_bitmap_need``: the buffer
  overflowed, the stream was reset or a filter put writes in its dirty map) and records needs in the per-volume
  :class:`~vra_appliance.sync.state.VpgSyncState`; anything else calls :meth:`VpgSyncRunner.need` (a new
  VPG, a pre-seeded volume, a filter that restarted without its map, a restarted VRA, a forced sync);
- while any volume needs or runs a sync, the VPG is marked not consistent (``VpgLink.set_syncing``), from
  the moment the need is known, so checkpoints taken meanwhile say so; when the last sync completes, the
  mark goes and the next checkpoint is consistent;
- every range is pushed into the stream with :meth:`StreamSink.push`, which waits for room in the stream's
  buffer, reads the range from the source volume and enqueues it *atomically* with respect to the filters'
  writes of that volume (docs/SYNC.md, "Writes during a sync"): the buffer is the flow control, a sync
  never overflows it;
- the bitmap sync's extents come from :class:`DirtySource`\\ s (the VRA's own map of what it let go, the
  filters' dirty maps over their control sockets) and go back to them if the sync is interrupted. An
  initial or delta sync covers whatever those maps hold when it starts: it takes (and drops) them first,
  which also clears a restarted filter's ``unclean`` mark;
- a need for a more thorough sync while one runs (a filter crash during a bitmap sync) stops the running
  one at its next range; the next round runs the one needed.

Nothing here imports the protect side: ``vra_appliance.sync.protect_adapter`` fits these protocols onto
``ProtectedVpg`` and the filter control socket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vra_appliance.errors import ApplianceError, DirtyMapLostError, PermanentError, TransientError
from vra_appliance.sync.bitmap import BitmapSync, coalesce
from vra_appliance.sync.delta import ChecksumPeer, DeltaSync
from vra_appliance.sync.initial import InitialSync
from vra_appliance.sync.state import Reason, SyncKind, VpgSyncState
from vra_appliance.sync.throttle import Throttle
from vra_appliance.sync.volume import VolumeReader
from zvr_common.loop import Loop

log = logging.getLogger(__name__)


class StreamSink(Protocol):
    def max_push(self) -> int:
        """The largest piece ``push`` takes (a fraction of the stream's buffer)."""
        ...

    def push(self, volume: str, offset: int, length: int, read: Callable[[int, int], bytes],
             timeout: float) -> bool:
        """Wait up to ``timeout`` for room, then read ``[offset, offset + length)`` with ``read`` and enqueue it
        as a write of ``volume``, with no filter write of that volume sequenced in between. False: no room in
        time; nothing was read or enqueued (the caller still owns the range)."""
        ...


class DirtySource(Protocol):
    def take(self, volume: str) -> list[tuple[int, int]]:
        """The volume's dirty extents, removed from the source (fetch and clear in one step). Raises
        DirtyMapLostError when the source's map cannot be trusted (a filter that stopped uncleanly)."""
        ...

    def give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        """Record extents as dirty again (an interrupted sync); a source that cannot raises an ApplianceError."""
        ...


class VpgLink(Protocol):
    @property
    def connected(self) -> bool: ...

    def take_bitmap_need(self) -> bool:
        """Whether writes went to a dirty map since the last call. Taking it clears it and marks the VPG
        syncing in one step (no checkpoint in between is consistent)."""
        ...

    # Optional: ``take_delta_need() -> bool``: whether the recovery side lost records it had acknowledged
    # (its journal was discarded) since the last call; taking it clears it and marks the VPG syncing. The
    # runner then needs a delta sync of every volume (Reason.RECOVERY_JOURNAL_LOST).

    def set_syncing(self, syncing: bool) -> None:
        """True: checkpoints from now on are not consistent. False: they are again, unless the VPG's own
        dirty map is not empty (then it keeps needing a bitmap sync)."""
        ...


@dataclass
class SyncReport:
    volume: str
    kind: str
    ranges: int = 0
    bytes: int = 0  # bytes pushed into the stream
    dirty_bytes: int = 0  # bitmap sync: bytes the dirty maps covered
    completed: bool = False
    error: str = ""
    percent: float = 0.0  # of the volume scanned (initial, delta) or of the dirty extents sent (bitmap)
    wire_bytes: int = 0  # delta sync: data plus checksums and requests; otherwise the data
    started_ns: int = 0
    finished_ns: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "extra"}


class _Restart(TransientError):
    """A more thorough sync became needed while this one ran."""


class VpgSyncRunner:
    """The syncs of one protected VPG (see the module docstring). ``peer`` is the recovery side's checksum
    service for delta syncs (None: a delta sync cannot run and stays pending). ``volumes`` may be a lazy
    mapping whose lookup raises TransientError (the volume is not reachable yet: the sync runs later)."""

    def __init__(
        self,
        vpg: str,
        link: VpgLink,
        sink: StreamSink,
        volumes: Mapping[str, VolumeReader],
        *,
        dirty_sources: Iterable[DirtySource] = (),
        peer: ChecksumPeer | None = None,
        state: VpgSyncState | None = None,
        throttle: Throttle | None = None,
        max_io: int = 1024 * 1024,
        room_timeout: float = 30.0,
        interval: float = 0.2,
        permanent_backoff: float = 30.0,
        keep_reports: int = 16,
        on_report: Callable[[SyncReport], None] | None = None,
    ) -> None:
        self.vpg = vpg
        self.link = link
        self.sink = sink
        self.volumes = volumes
        self.dirty_sources = list(dirty_sources)
        self.peer = peer
        self.state = state or VpgSyncState(list(self.volumes))
        self.throttle = throttle
        self.max_io = max_io
        self.room_timeout = room_timeout
        self.interval = interval
        self.permanent_backoff = permanent_backoff  # a sync that failed for good is retried this much later
        self.on_report = on_report  # called with each finished (or interrupted) sync, e.g. for status
        self.reports: deque[SyncReport] = deque(maxlen=keep_reports)
        self.current: SyncReport | None = None
        self._progress: Callable[[], float] = lambda: 0.0
        self._restart: set[str] = set()
        self._hold: dict[str, float] = {}  # volume -> monotonic time before which a failed sync is not retried
        self._syncing = False  # what the link was told last
        self.streaming_since_ns = 0  # when the link was last told the syncs are over (consistent from then on)
        self._lock = threading.Lock()  # the state; held around set_syncing so the link follows the state
        self._loop = Loop(f"sync-{vpg}", interval, target=self.sync_once, logger=log)

    # -- needs ---------------------------------------------------------------------------------------------------
    def need(self, reason: Reason | str, volumes: Iterable[str] | None = None) -> None:
        """Something needs a sync (a new VPG, a pre-seeded volume, a filter that restarted without its map...).
        Checkpoints are not consistent from now on until the sync completes. Unknown volumes are ignored."""
        with self._lock:
            for v in volumes if volumes is not None else list(self.state.volumes):
                if v not in self.state.volumes:
                    continue
                self._hold.pop(v, None)
                if self.state[v].need(reason):
                    self._restart.add(v)
            if not self.state.checkpoint_consistent:
                self._set_syncing(True)
        self._loop.wake()

    def _set_syncing(self, syncing: bool) -> None:
        """Tell the link (under ``_lock``, so that it always follows the state)."""
        self.link.set_syncing(syncing)
        if self._syncing and not syncing:
            self.streaming_since_ns = time.time_ns()
        self._syncing = syncing

    # -- the loop ------------------------------------------------------------------------------------------------
    def sync_once(self) -> list[SyncReport]:
        """Run every sync that is needed now, one volume after the other; returns what ran."""
        # A link without ``take_delta_need`` (an older or test link) never reports a lost recovery journal.
        take_delta = getattr(self.link, "take_delta_need", None)
        if take_delta is not None and take_delta():
            self.need(Reason.RECOVERY_JOURNAL_LOST)
        if self.link.take_bitmap_need():
            self.need(Reason.BUFFER_OVERFLOW)
        with self._lock:
            now = time.monotonic()
            pending = [v for v, s in self.state.volumes.items()
                       if s.kind is not None and not s.running and self._hold.get(v, 0.0) <= now]
            if not self.state.checkpoint_consistent:
                self._set_syncing(True)
            else:
                self._set_syncing(False)
        if not pending or not self.link.connected:
            return []
        done = []
        for v in pending:
            with self._lock:
                st = self.state[v]
                if st.kind is None or st.running or (st.kind is SyncKind.DELTA and self.peer is None):
                    continue
                kind = st.begin()
                self._restart.discard(v)
            done.append(self._run(v, kind))
        with self._lock:
            if self.state.checkpoint_consistent:
                self._set_syncing(False)
        self.reports.extend(done)
        if self.on_report is not None:
            for report in done:
                self.on_report(report)
        return done

    def _run(self, volume: str, kind: SyncKind) -> SyncReport:
        report = SyncReport(volume, kind.value, started_ns=time.time_ns())
        self.current = report
        bitmap: BitmapSync | None = None
        delta: DeltaSync | None = None
        try:
            reader = self.volumes[volume]
            if kind is SyncKind.BITMAP:
                extents: list[tuple[int, int]] = []
                try:
                    for src in self.dirty_sources:
                        extents.extend(src.take(volume))
                except (TransientError, DirtyMapLostError):
                    self._give_back(volume, extents)
                    raise
                bitmap = BitmapSync(reader, volume, coalesce(extents, reader.size), max_io=self.max_io)
                report.dirty_bytes = bitmap.stats.dirty_bytes
                self._progress = lambda: 100.0 * report.bytes / max(1, report.dirty_bytes)
                ranges: Iterable[tuple[int, int]] = bitmap.ranges()
            else:
                self._drain(volume)  # what the dirty maps hold now, this sync covers
                if kind is SyncKind.DELTA:
                    delta = DeltaSync(reader, volume, self.peer, vpg=self.vpg, max_io=self.max_io)
                    ranges = delta.ranges()
                    report.extra = {"delta": delta.stats}
                    self._progress = lambda: delta.stats.percent
                else:
                    # The scan's data may be stale by the time it is pushed: only its ranges are used, and push
                    # reads them again under the sequencer lock.
                    initial = InitialSync(reader, volume, chunk=self.max_io)
                    ranges = ((e.offset, len(e.data)) for e in initial.extents())
                    report.extra = {"initial": initial.progress}
                    self._progress = lambda: initial.progress.percent
            for off, length in ranges:
                self._push(volume, reader, off, length)
                report.ranges += 1
                report.bytes += length
                if bitmap is not None:
                    bitmap.done(off + length)  # pushed: no longer pending
            with self._lock:
                self.state[volume].complete()
            report.completed = True
            log.info("VPG %s volume %s: %s done: %d bytes in %d ranges%s (%.1f s)", self.vpg, volume, kind.value,
                     report.bytes, report.ranges,
                     f", {delta.stats.wire_bytes} on the wire with checksums" if delta is not None else "",
                     (time.time_ns() - report.started_ns) / 1e9)
        except DirtyMapLostError as exc:
            report.error = str(exc)
            with self._lock:
                self.state[volume].need(Reason.FILTER_RESTARTED)
                self.state[volume].interrupt()
            log.warning("VPG %s volume %s: %s", self.vpg, volume, exc)
        except (ApplianceError, OSError) as exc:
            report.error = str(exc)
            if bitmap is not None:
                self._give_back(volume, bitmap.pending())
            with self._lock:
                self.state[volume].interrupt()
            if isinstance(exc, PermanentError):
                log.error("VPG %s volume %s: %s failed (retried in %.0f s, or at the next need): %s",
                          self.vpg, volume, kind.value, self.permanent_backoff, exc)
                with self._lock:
                    self._hold[volume] = time.monotonic() + self.permanent_backoff
            else:
                log.warning("VPG %s volume %s: %s interrupted: %s", self.vpg, volume, kind.value, exc)
        except Exception as exc:  # a bug, or a failure nobody translated: the sync must still end, and rerun
            report.error = f"{type(exc).__name__}: {exc}"
            if bitmap is not None:
                self._give_back(volume, bitmap.pending())
            with self._lock:
                self.state[volume].interrupt()
                self._hold[volume] = time.monotonic() + self.permanent_backoff
            log.exception("VPG %s volume %s: %s failed", self.vpg, volume, kind.value)
        finally:
            report.percent = 100.0 if report.completed else round(self._progress(), 2)
            report.wire_bytes = delta.stats.wire_bytes if delta is not None else report.bytes
            report.finished_ns = time.time_ns()
            self._progress = lambda: 0.0
            self.current = None
        return report

    def _drain(self, volume: str) -> None:
        """Take (and drop) the dirty sources' extents of ``volume``: the initial or delta sync about to run
        sends whatever they cover. A source whose map was lost has nothing to give, which is fine here."""
        for src in self.dirty_sources:
            try:
                src.take(volume)
            except DirtyMapLostError:
                pass

    def _push(self, volume: str, reader: VolumeReader, offset: int, length: int) -> None:
        if self.throttle is not None:
            self.throttle.acquire(length)
        piece = max(1, min(self.max_io, self.sink.max_push()))
        end = offset + length
        while offset < end:
            n = min(piece, end - offset)
            deadline = time.monotonic() + self.room_timeout
            while True:
                if self._loop.stopping:
                    raise TransientError(f"the sync of VPG {self.vpg} is stopping")
                if volume in self._restart:
                    raise _Restart(f"VPG {self.vpg} volume {volume}: a more thorough sync is needed; it runs next")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransientError(
                        f"VPG {self.vpg}: the replication stream is not moving; the sync resumes later")
                if self.sink.push(volume, offset, n, reader.pread, min(left, 0.25)):
                    break
            offset += n

    def _give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        if not extents:
            return
        for src in self.dirty_sources:
            try:
                src.give_back(volume, extents)
                return
            except ApplianceError:
                continue
        log.error("VPG %s volume %s: no dirty map takes back %d extents; a delta sync is needed",
                  self.vpg, volume, len(extents))
        with self._lock:
            self.state[volume].need(Reason.FILTER_RESTARTED)

    # -- status ----------------------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Substatus (InitialSync, DeltaSync, BitmapSync, or "" when streaming), the running sync with its
        progress, each volume's phase, and the last sync reports (newest last)."""
        with self._lock:
            substatus = self.state.substatus or ""
            phases = {v: s.phase.value for v, s in self.state.volumes.items()}
            consistent = self.state.checkpoint_consistent
        current = self.current
        running = None
        if current is not None:
            running = current.as_dict()
            running["percent"] = round(self._progress(), 2)
        return {"substatus": substatus, "consistent": consistent, "volumes": phases, "current": running,
                "reports": [r.as_dict() for r in list(self.reports)],
                "streaming_since_ns": self.streaming_since_ns}

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop(timeout=None)
