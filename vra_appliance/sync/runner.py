"""Runs a protected VPG's syncs into its replication stream: ``start()`` / ``stop()`` / ``sync_once()``.

The engines (initial, delta, bitmap) say *what* to send; this says *when* and *where*:

- it watches the VPG (``VpgLink.needs_bitmap_sync``: the buffer overflowed or the link was down and writes
  went to a dirty map) and records needs in the per-volume :class:`~vra_appliance.sync.state.VpgSyncState`;
- while any volume syncs, the VPG is marked not consistent (``VpgLink.set_syncing``), so checkpoints taken
  meanwhile say so; when the last sync completes, the mark goes and the next checkpoint is consistent;
- every range is pushed into the stream with :meth:`StreamSink.push`, which reads the range from the
  source volume and enqueues it *atomically* with respect to the filters' writes of that volume
  (docs/SYNC.md, "Writes during a sync"), after :meth:`StreamSink.wait_room` (the stream's buffer is the
  flow control: a sync never overflows it);
- the bitmap sync's extents come from :class:`DirtySource`\\ s (the VRA's own map of what it let go, the
  filters' dirty maps over their control sockets) and go back to them if the sync is interrupted.

Nothing here imports the protect side: ``vra_appliance.sync.protect_adapter`` fits these protocols onto
``ProtectedVpg`` and the filter control socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vra_appliance.sync.bitmap import BitmapSync, coalesce
from vra_appliance.sync.delta import ChecksumPeer, DeltaSync
from vra_appliance.sync.errors import DirtyMapLostError, PermanentError, SyncError, TransientError
from vra_appliance.sync.initial import InitialSync
from vra_appliance.sync.state import Phase, Reason, SyncKind, VpgSyncState
from vra_appliance.sync.throttle import Throttle
from vra_appliance.sync.volume import VolumeReader

log = logging.getLogger(__name__)


class StreamSink(Protocol):
    def max_push(self) -> int:
        """The largest piece ``push`` takes (a fraction of the stream's buffer)."""
        ...

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        """Wait until the stream's buffer can take ``nbytes`` more; False on timeout (or if it never will)."""
        ...

    def push(self, volume: str, offset: int, length: int, read: Callable[[int, int], bytes]) -> bool:
        """Read ``[offset, offset + length)`` with ``read`` and enqueue it as a write of ``volume``, with no
        filter write of that volume sequenced in between. False if the stream refused it (buffer full): the
        range was then recorded as dirty by the sink."""
        ...


class DirtySource(Protocol):
    def take(self, volume: str) -> list[tuple[int, int]]:
        """The volume's dirty extents, removed from the source (fetch and clear in one step)."""
        ...

    def give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        """Record extents as dirty again (an interrupted sync); a source that cannot raises SyncError."""
        ...


class VpgLink(Protocol):
    @property
    def needs_bitmap_sync(self) -> bool: ...

    @property
    def connected(self) -> bool: ...

    def set_syncing(self, syncing: bool) -> None:
        """True: checkpoints from now on are not consistent. False: they are again, unless the VPG's own
        dirty map is not empty (then it keeps needing a bitmap sync)."""
        ...


@dataclass
class SyncReport:
    volume: str
    kind: str
    ranges: int = 0
    bytes: int = 0
    dirty_bytes: int = 0
    completed: bool = False
    error: str = ""
    extra: dict = field(default_factory=dict)


class VpgSyncRunner:
    """The syncs of one protected VPG (see the module docstring). ``peer`` is the recovery side's checksum
    service for delta syncs (None: a delta sync cannot run and stays pending)."""

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
        on_report: Callable[[SyncReport], None] | None = None,
    ) -> None:
        self.vpg = vpg
        self.link = link
        self.sink = sink
        self.volumes = dict(volumes)
        self.dirty_sources = list(dirty_sources)
        self.peer = peer
        self.state = state or VpgSyncState(self.volumes)
        self.throttle = throttle
        self.max_io = max_io
        self.room_timeout = room_timeout
        self.interval = interval
        self.on_report = on_report  # called with each finished (or interrupted) sync, e.g. for status
        self.reports: list[SyncReport] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- needs ---------------------------------------------------------------------------------------------------
    def need(self, reason: Reason | str, volumes: Iterable[str] | None = None) -> None:
        """Something needs a sync (a new VPG, a pre-seeded volume, a filter that restarted without its map...)."""
        for v in volumes if volumes is not None else self.volumes:
            self.state[v].need(reason)

    # -- the loop ------------------------------------------------------------------------------------------------
    def sync_once(self) -> list[SyncReport]:
        """Run every sync that is needed now, one volume after the other; returns what ran."""
        if self.link.needs_bitmap_sync:
            for v in self.volumes:
                if self.state[v].phase is Phase.STREAMING:
                    self.state[v].need(Reason.BUFFER_OVERFLOW)
        pending = [v for v, s in self.state.volumes.items() if s.kind is not None and not s.running]
        if not pending or not self.link.connected:
            return []
        self.link.set_syncing(True)
        done = []
        try:
            for v in pending:
                kind = self.state[v].kind
                if kind is SyncKind.DELTA and self.peer is None:
                    continue
                done.append(self._run(v, self.state[v].begin()))
        finally:
            if self.state.checkpoint_consistent:
                self.link.set_syncing(False)
        self.reports.extend(done)
        if self.on_report is not None:
            for report in done:
                self.on_report(report)
        return done

    def _run(self, volume: str, kind: SyncKind) -> SyncReport:
        reader = self.volumes[volume]
        report = SyncReport(volume, kind.value)
        bitmap: BitmapSync | None = None
        try:
            if kind is SyncKind.BITMAP:
                extents: list[tuple[int, int]] = []
                try:
                    for src in self.dirty_sources:
                        extents.extend(src.take(volume))
                except TransientError:
                    self._give_back(volume, extents)
                    raise
                bitmap = BitmapSync(reader, volume, coalesce(extents, reader.size), max_io=self.max_io)
                report.dirty_bytes = bitmap.stats.dirty_bytes
                ranges: Iterable[tuple[int, int]] = bitmap.ranges()
            elif kind is SyncKind.DELTA:
                delta = DeltaSync(reader, volume, self.peer, vpg=self.vpg, max_io=self.max_io)
                ranges = delta.ranges()
                report.extra = {"delta": delta.stats}
            else:
                # The scan's data may be stale by the time it is pushed: only its ranges are used, and push
                # reads them again under the sequencer lock.
                initial = InitialSync(reader, volume, chunk=self.max_io)
                ranges = ((e.offset, len(e.data)) for e in initial.extents())
                report.extra = {"initial": initial.progress}
            done_upto = 0
            for off, length in ranges:
                self._push(volume, reader, off, length)
                report.ranges += 1
                report.bytes += length
                done_upto = off + length
                if bitmap is not None:
                    bitmap.done(done_upto)  # pushed: no longer pending
            self.state[volume].complete()
            report.completed = True
        except DirtyMapLostError as exc:
            report.error = str(exc)
            self.state[volume].need(Reason.FILTER_RESTARTED)
            self.state[volume].interrupt()
            log.warning("VPG %s volume %s: %s", self.vpg, volume, exc)
        except (SyncError, OSError) as exc:
            report.error = str(exc)
            if bitmap is not None:
                self._give_back(volume, bitmap.pending())
            self.state[volume].interrupt()
            if isinstance(exc, PermanentError):
                log.error("VPG %s volume %s: %s failed: %s", self.vpg, volume, kind.value, exc)
            else:
                log.warning("VPG %s volume %s: %s interrupted: %s", self.vpg, volume, kind.value, exc)
        return report

    def _push(self, volume: str, reader: VolumeReader, offset: int, length: int) -> None:
        if self._stop.is_set():
            raise TransientError(f"the sync of VPG {self.vpg} is stopping")
        if self.throttle is not None:
            self.throttle.acquire(length)
        piece = max(1, min(self.max_io, self.sink.max_push()))
        end = offset + length
        while offset < end:
            n = min(piece, end - offset)
            if not self.sink.wait_room(n, self.room_timeout):
                raise TransientError(f"VPG {self.vpg}: the replication stream is not moving; the sync resumes later")
            if not self.sink.push(volume, offset, n, reader.pread):
                # The sink recorded the piece as dirty: a later bitmap sync sends it.
                raise TransientError(f"VPG {self.vpg}: the stream's buffer overflowed during the sync")
            offset += n

    def _give_back(self, volume: str, extents: list[tuple[int, int]]) -> None:
        for src in self.dirty_sources:
            try:
                src.give_back(volume, extents)
                return
            except SyncError:
                continue
        log.error("VPG %s volume %s: no dirty map takes back %d extents; a delta sync is needed",
                  self.vpg, volume, len(extents))
        self.state[volume].need(Reason.FILTER_RESTARTED)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"sync-{self.vpg}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception:
                log.exception("VPG %s: sync runner failed", self.vpg)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
