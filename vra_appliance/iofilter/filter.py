"""`IoFilter`: one host's IO filter, wiring the NBD server, the splitter, the gates, the dirty map, its
sidecars and the control socket together.

The NBD server knows nothing of splitting: each volume's `FileBackend` is wrapped in a `SplittingBackend`
(gate, local write, hand-off to the splitter), the way retry or metrics wrap a transport.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vra_appliance.iofilter import dirty_store, native
from vra_appliance.iofilter.control import ControlError, ControlServer
from vra_appliance.iofilter.dirty_map import EXTENT_BYTES, DirtyMap
from vra_appliance.iofilter.freeze import FreezeCoordinator, FreezeError, WriteGate
from vra_appliance.iofilter.nbd import NbdServer
from vra_appliance.iofilter.nbd_backend import FileBackend
from vra_appliance.iofilter.splitter import Splitter

log = logging.getLogger(__name__)


class SplittingBackend:
    """A volume's backend as the VM sees it: writes wait at the gate during a freeze, go to the volume, and
    are then handed to the splitter. A write that fails part way marks its range dirty (it may have landed).

    The NBD connection's write loop is compiled (native/zwrite.c, through `Transmission`): it receives
    into the split ring's slabs (`renew_recv_buffer`), writes to the volume and publishes the write into
    the ring itself. What it cannot publish (no ring, a full or closed one, private memory, a failed write)
    it stages, with this volume's lock held, and `hand_off` gives it to the splitter (socket, ring copy or
    dirty map) before the replies go out. That per-volume lock, held from the write to the volume until
    the write reached the split stream, is the write order across connections (issue 19 part 1):
    overlapping writes reach the volume and the split stream in one order. Zeroing takes it too.
    """

    def __init__(self, inner: FileBackend, splitter: Splitter, gate: WriteGate):
        self.inner = inner
        self.name = inner.name
        self.size = inner.size
        self.read_only = inner.read_only
        self.accepts_views = bool(getattr(inner, "accepts_views", False))
        self.can_multi_conn = bool(getattr(inner, "can_multi_conn", False))
        if hasattr(inner, "pread_into"):
            self.pread_into = inner.pread_into
        if hasattr(inner, "block_status"):
            self.block_status = inner.block_status
        self._splitter = splitter
        self._gate = gate
        self._lib = lib = native.lib()  # NativeUnavailable (what to install) if it cannot be built
        self._vol_id = ctypes.create_string_buffer(self.name.encode())
        self.native = native.ZVol(fd=inner.fileno(), size=inner.size, read_only=int(inner.read_only),
                                  vol_addr=ctypes.addressof(self._vol_id), vlen=len(self.name.encode()))
        self._vp = ctypes.pointer(self.native)
        if lib.zvol_init(self._vp):
            raise OSError("pthread_mutex_init failed for a volume")
        gate.attach_native(lambda held: lib.zvol_set_held(self._vp, int(held)), lambda: lib.zvol_inflight(self._vp))

    def hand_off(self, conn_ptr, view: memoryview, slab) -> list[tuple[int, int]]:
        """Give the writes the compiled loop staged (``conn_ptr``: its ``native.ZConn``; their data in
        ``view``, the connection's receive buffer, a ``slab`` of the ring or None) to the splitter, then
        unlock the volume. Returns ``(handle, errno)`` of the writes that failed (their ranges are dirty)."""
        conn = conn_ptr.contents
        writes, failed, name = [], [], self.name
        try:
            for staged in conn.staged[:conn.nstaged]:
                offset, n, pos = staged.offset, staged.length, staged.pos
                if staged.err:
                    failed.append((staged.handle, staged.err))
                    self._splitter.mark_dirty(name, offset, n)
                elif slab is not None:
                    writes.append((name, offset, view[pos:pos + n], slab, pos))
                else:
                    writes.append((name, offset, view[pos:pos + n]))
            if writes:
                self._splitter.submit_writes(writes)
        finally:
            self._lib.zconn_release(conn_ptr)
        return failed

    def wait_gate(self) -> None:
        """The compiled loop found the gate held: wait for the thaw (or the hold's deadline)."""
        self._gate.pass_held()

    def pread(self, offset: int, length: int) -> bytes:
        return self.inner.pread(offset, length)

    def pwrite(self, offset: int, data, fua: bool = False) -> None:
        """One write outside an NBD connection (the ExportBackend contract); NBD writes take the compiled path."""
        with self._gate, self._volume_locked():
            try:
                self.inner.pwrite(offset, data, fua)
            except BaseException:
                self._splitter.mark_dirty(self.name, offset, len(data))
                raise
            self._splitter.submit_writes([(self.name, offset, data)])

    @contextmanager
    def _volume_locked(self) -> Iterator[None]:
        self._lib.zvol_lock(self._vp)  # releases the GIL while it waits
        try:
            yield
        finally:
            self._lib.zvol_unlock(self._vp)

    def renew_recv_buffer(self, old):
        """An NBD receive buffer in the split ring's shared memory (or None: use private memory)."""
        return self._splitter.renew_slab(old)

    def release_recv_buffer(self, buf) -> None:
        self._splitter.give_back_slab(buf)

    def trim(self, offset: int, length: int) -> None:
        self._zeroing(self.inner.trim, offset, length)

    def write_zeroes(self, offset: int, length: int, may_trim: bool = False) -> None:
        self._zeroing(lambda o, n: self.inner.write_zeroes(o, n, may_trim), offset, length)

    def _zeroing(self, op, offset: int, length: int) -> None:
        with self._gate, self._volume_locked():
            try:
                op(offset, length)
            except BaseException:
                self._splitter.mark_dirty(self.name, offset, length)
                raise
            self._splitter.submit_zero(self.name, offset, length)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


class IoFilter:
    """Serves ``volumes`` ({volume id: file path}) over NBD and splits their writes to the VRA at ``vra``."""

    def __init__(self, volumes: dict[str, str | os.PathLike], unix_path: str | os.PathLike | None = None,
                 tcp: str | tuple[str, int] | None = None, vra: str | None = None,
                 control: str | os.PathLike | None = None, filter_id: str | None = None,
                 queue_bytes: int = 64 * 1024 * 1024, dirty_budget_bytes: int = 1024 * 1024, ring: bool = True):
        if not volumes:
            raise ValueError("the IO filter needs at least one --volume ID=PATH")
        if dirty_budget_bytes < EXTENT_BYTES * len(volumes):
            raise ValueError(f"a dirty map budget of {dirty_budget_bytes} B is too small for {len(volumes)} "
                             f"volumes; give at least {EXTENT_BYTES * len(volumes)} B")
        self.volume_paths = {vid: Path(p) for vid, p in volumes.items()}
        self.unix_path = unix_path
        self.tcp = tcp
        self.control_path = control
        self.filter_id = filter_id or f"{socket.gethostname()}:{unix_path or tcp}"
        self.dirty = DirtyMap(dirty_budget_bytes)
        self.splitter = Splitter(self.filter_id, list(volumes), vra, self.dirty, queue_bytes, ring=ring,
                                 on_lost=self._lost_track)
        self.gates = {vid: WriteGate() for vid in volumes}
        self.freezer = FreezeCoordinator(self.gates, self.splitter.mark, self.splitter.is_dirty)
        self.server: NbdServer | None = None
        self.control: ControlServer | None = None
        self.records: dict[str, dirty_store.VolumeRecord] = {}
        self.unclean: dict[str, bool] = {}
        self._backends: dict[str, FileBackend] = {}
        self.running = False
        self._started = time.monotonic()
        self._rate_lock = threading.Lock()
        self._last_rate = (self._started, 0, 0, 0)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            for vid, path in self.volume_paths.items():
                backend = self._backends[vid] = FileBackend(path, name=vid)
                record = self.records[vid] = dirty_store.open_volume(vid, path, backend.size)
                self.unclean[vid] = record.unclean
                if record.unclean:
                    log.warning("volume %s: the previous IO filter did not stop cleanly (generation %d); "
                                "its dirty map is unknown and a delta sync is needed", vid, record.generation - 1)
                elif record.state:
                    self.dirty.load_volume(vid, record.state)
            exports = {vid: SplittingBackend(b, self.splitter, self.gates[vid]) for vid, b in self._backends.items()}
            self.server = NbdServer(exports, unix_path=self.unix_path, tcp=self.tcp)
            self.splitter.start()
            self.server.start()
            if self.control_path is not None:
                self.control = ControlServer(self.control_path, self.dispatch)
                self.control.start()
        except BaseException:
            self._close_backends()
            raise
        self._started = time.monotonic()
        self._last_rate = (self._started, 0, 0, 0)
        self.running = True

    def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Clean stop: no new IO, give the VRA time to acknowledge, then save every volume's dirty map."""
        if not self.running:
            return
        self.running = False
        if self.server is not None:
            self.server.stop(close_exports=False)
        self.splitter.stop(drain_timeout_s)
        for vid, record in self.records.items():
            size = self._backends[vid].size
            dirty_store.save_clean(record, size, self.dirty.volume_state(vid), self.unclean[vid])
        if self.control is not None:
            self.control.stop()
        self._close_backends()

    def _lost_track(self) -> None:
        """The splitter cannot tell which writes the VRA missed: every volume needs a delta sync."""
        for vid in self.unclean:
            self.unclean[vid] = True

    def _close_backends(self) -> None:
        for backend in self._backends.values():
            backend.close()

    # -- control --------------------------------------------------------------------------------------
    def dispatch(self, request: dict) -> dict:
        op = request["op"]
        try:
            if op == "freeze":
                return self.freezer.freeze(str(request.get("checkpoint_id", "")), request.get("volumes") or None,
                                           float(request.get("timeout_ms", 50)))
            if op == "thaw":
                return self.freezer.thaw(str(request.get("checkpoint_id", "")))
            if op == "counters":
                return {"ok": True, **self.counters()}
            if op == "dirty":
                return self._dirty_op(request)
            if op == "status":
                return {"ok": True, **self.status()}
        except FreezeError as exc:
            raise ControlError(str(exc)) from exc
        raise ControlError(f"unknown op {op!r}; use freeze, thaw, counters, dirty or status")

    def _dirty_op(self, request: dict) -> dict:
        volume = request.get("volume")
        if volume not in self.gates:
            raise ControlError(f"unknown volume {volume!r}; this filter serves {sorted(self.gates)}")
        clear = bool(request.get("clear", False))
        passed = True
        if clear:  # a sync takes them: only once the VRA has what was on its way (the sync barrier)
            extents, over, passed = self.splitter.take_dirty(volume)
        else:
            extents, over = self.splitter.dirty_extents(volume)
        unclean = self.unclean[volume]
        if clear and passed:
            self.unclean[volume] = False
        reply = {"ok": True, "volume": volume, "extents": [list(x) for x in extents], "over_coverage": over,
                 "unclean": unclean}
        if clear:
            reply["barrier"] = passed
        return reply

    def status(self) -> dict:
        return {"filter_id": self.filter_id, "volumes": {
            vid: {"path": str(self.volume_paths[vid]), "size": self._backends[vid].size,
                  "generation": self.records[vid].generation, "unclean": self.unclean[vid]}
            for vid in self.records}}

    def counters(self) -> dict:
        per_export = self.server.counters() if self.server is not None else {}
        split = self.splitter.snapshot()
        totals = {k: sum(c[k] for c in per_export.values())
                  for k in ("reads", "writes", "bytes_read", "bytes_written", "flushes", "trims", "zeroes", "errors")}
        now = time.monotonic()
        with self._rate_lock:
            t0, r0, w0, b0 = self._last_rate
            ops = totals["reads"] + totals["writes"]
            nbytes = totals["bytes_read"] + totals["bytes_written"]
            dt = max(now - t0, 1e-6)
            rates = {"iops": (ops - r0 - w0) / dt, "write_iops": (totals["writes"] - w0) / dt,
                     "bytes_per_s": (nbytes - b0) / dt, "rate_window_s": dt}
            self._last_rate = (now, totals["reads"], totals["writes"], nbytes)
        volumes = {}
        for vid in self.gates:
            dirty_bytes, over = self.splitter.dirty_summary(vid)
            volumes[vid] = {**per_export.get(vid, {}), "dirty_bytes": dirty_bytes, "over_coverage": over,
                            "unclean": self.unclean.get(vid), "held_writes": self.gates[vid].held_writes}
        return {"filter_id": self.filter_id, "uptime_s": now - self._started, **rates, **totals, **split,
                "checkpoints": self.freezer.snapshot(), "volumes": volumes}
