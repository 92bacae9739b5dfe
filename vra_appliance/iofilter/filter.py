"""`IoFilter`: one host's IO filter, wiring the NBD server, the splitter, the gates, the dirty map, its
sidecars and the control socket together.

The NBD server knows nothing of splitting: each volume's `FileBackend` is wrapped in a `SplittingBackend`
(gate, local write, hand-off to the splitter), the way retry or metrics wrap a transport.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from vra_appliance.iofilter import dirty_store
from vra_appliance.iofilter.control import ControlError, ControlServer
from vra_appliance.iofilter.dirty_map import EXTENT_BYTES, DirtyMap
from vra_appliance.iofilter.freeze import FreezeCoordinator, FreezeError, WriteGate
from vra_appliance.iofilter.nbd import NbdServer
from vra_appliance.iofilter.nbd_backend import ExportBackend, FileBackend
from vra_appliance.iofilter.splitter import Splitter
from vra_appliance.iofilter.write_order import WriteOrder

log = logging.getLogger(__name__)


class SplittingBackend:
    """A volume's backend as the VM sees it: writes wait at the gate during a freeze, go to the volume, and
    are then handed to the splitter. A write that fails part way marks its range dirty (it may have landed).

    With a split ring, the NBD connection receives into the ring's slabs (`renew_recv_buffer`), so a write's
    data reaches the VRA where the kernel put it (`pwrite_from`).

    Completed writes are staged per connection thread and handed to the splitter together in `batch_done`,
    which the NBD server calls before it sends the replies of a batch of requests: the split still happens
    before the VM hears of the write, with one send to the VRA per batch instead of one per write. A staged
    write stays "in flight" at its gate until then, so a freeze orders it before the MARK. Overlapping writes
    of several connections reach the volume in the order they reach the splitter (`WriteOrder`).
    """

    def __init__(self, inner: ExportBackend, splitter: Splitter, gate: WriteGate):
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
        self._order = WriteOrder()
        self._local = threading.local()

    def _staged(self) -> list:
        staged = getattr(self._local, "staged", None)
        if staged is None:
            staged = self._local.staged = []
        return staged

    def batch_done(self) -> None:
        """Hand this thread's completed writes to the splitter (views in them are valid until now)."""
        staged = getattr(self._local, "staged", None)
        try:
            if staged:
                try:
                    self._splitter.submit_writes(staged)
                finally:
                    self._gate.leave(len(staged))
                    staged.clear()
        finally:
            self._order.release()

    def pread(self, offset: int, length: int) -> bytes:
        return self.inner.pread(offset, length)

    def pwrite(self, offset: int, data, fua: bool = False) -> None:
        self._write(offset, data, fua, (self.name, offset, data))

    def pwrite_from(self, offset: int, data, fua: bool, buf, start: int) -> None:
        """`pwrite` of ``data``, which is ``buf.view[start:start + len(data)]`` of a receive buffer from
        `renew_recv_buffer`: the splitter can then refer to the data where it is instead of copying it."""
        self._write(offset, data, fua, (self.name, offset, data, buf, start))

    def _write(self, offset: int, data, fua: bool, staged: tuple) -> None:
        self._gate.enter(self.batch_done)
        try:
            self._order.claim(offset, len(data), self.batch_done)
            self.inner.pwrite(offset, data, fua)
        except BaseException:
            self._splitter.mark_dirty(self.name, offset, len(data))
            self._gate.leave()
            raise
        self._staged().append(staged)
        if fua or self._order.wanted and threading.get_ident() in self._order.wanted:
            self.batch_done()  # FUA: the VM waits for this one; wanted: another connection waits for our range

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
        self.batch_done()  # staged writes were completed first: they go first
        with self._gate, self._order.exclusive():
            try:
                op(offset, length)
            except BaseException:
                self._splitter.mark_dirty(self.name, offset, length)
                raise
            self._splitter.submit_zero(self.name, offset, length)

    def flush(self) -> None:
        self.batch_done()
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
        extents, over = self.splitter.dirty_extents(volume, clear)
        unclean = self.unclean[volume]
        if clear:
            self.unclean[volume] = False
        return {"ok": True, "volume": volume, "extents": [list(x) for x in extents], "over_coverage": over,
                "unclean": unclean}

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
