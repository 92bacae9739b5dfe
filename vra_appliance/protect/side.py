"""The protect side of one VRA: its filters' split streams -> the ``ProtectedVpg`` of each volume's VPG.

``ProtectSide`` is the ``SplitHandler`` of the VRA's ``SplitListener`` (vra_appliance.protect.split_listener):
it routes every write to the VPG of its volume, notices gaps in a filter's ``filter_seq`` (the filter put
writes in its dirty map: the VPGs on that filter need a bitmap sync), and is the checkpoint ``Participant``
of this VRA: ``freeze`` / ``thaw`` drive the local filters' control sockets for one VPG.

Each role also has its syncs (``make_syncs``: in ``vra serve``, a ``VpgSyncRunner`` per role, built by
``vra_appliance.protect.syncs``), started and stopped with the role's engine. This module tells them what
it learns from the filters: a filter that restarted after a crash reports its volumes ``unclean`` (its dirty
map was lost) in its control socket's ``status``, which is asked after every (re)connection to the control
socket and after every hello of a filter's split stream; those volumes need a delta sync. A filter that
answers a freeze with ``dirty`` put writes in its dirty map: the VPG needs a bitmap sync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vra_appliance.config import ProtectRole
from vra_appliance.iofilter.control import FilterControl
from vra_appliance.protect.checkpoints import Decision, FreezeResult, ThawResult
from vra_appliance.protect.vpg import ProtectedVpg

log = logging.getLogger(__name__)


@dataclass
class _FilterState:
    volumes: frozenset[str]
    last_seq: int | None = None
    marks_since: int = 0


class _Control:
    """One filter's control socket, shared by the VPGs on that filter (one request at a time).

    After every (re)connection it first asks the filter's ``status``: its id, volumes, their paths and which
    are ``unclean`` (the filter restarted after a crash); ``on_status(control)`` is called with what it
    learnt (outside the lock). A ``dirty`` request with ``clear`` ends a volume's ``unclean``.
    """

    def __init__(self, path: str, factory: Callable[[str], FilterControl],
                 on_status: Callable[[_Control], None] | None = None) -> None:
        self.path = path
        self._factory = factory
        self._client: FilterControl | None = None
        self._lock = threading.Lock()
        self.on_status = on_status
        self.filter_id: str | None = None
        self.volumes: frozenset[str] = frozenset()
        self.paths: dict[str, str] = {}
        self.unclean: frozenset[str] = frozenset()

    def request(self, op: str, **fields) -> dict:
        learnt = False
        with self._lock:
            if self._client is None:
                self._client = self._factory(self.path)
            try:
                if self.filter_id is None:
                    self._learn(self._client.status())
                    learnt = True
                reply = self._client.request(op, **fields)
            except (OSError, ValueError):
                self._client.close()
                self._client = None
                self.filter_id = None
                raise
            if op == "status":
                self._learn(reply)
                learnt = True
            elif op == "dirty" and fields.get("clear"):
                self.unclean = self.unclean - {fields.get("volume")}
        if learnt and self.on_status is not None:
            self.on_status(self)
        return reply

    def _learn(self, st: dict) -> None:
        vols = st.get("volumes", {})
        self.filter_id = st["filter_id"]
        self.volumes = frozenset(vols)
        self.paths = {v: info.get("path", "") for v, info in vols.items() if isinstance(info, dict)}
        self.unclean = frozenset(v for v, info in vols.items() if isinstance(info, dict) and info.get("unclean"))

    def served(self) -> frozenset[str]:
        """The volumes the filter serves (asks its status first if not known; OSError if it is not up)."""
        if self.filter_id is None:
            self.request("status")
        return self.volumes

    def path_of(self, volume: str) -> str | None:
        """The file the filter serves ``volume`` from (None: not this filter's)."""
        if self.filter_id is None:
            self.request("status")
        return self.paths.get(volume) or None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


@dataclass
class _Frozen:
    controls: list[_Control]
    filters: set[str]


class ProtectSide:
    """Every protect role of this VRA (see the module docstring)."""

    def __init__(
        self,
        vra_id: str,
        make_engine: Callable[[ProtectRole], ProtectedVpg],
        *,
        control_factory: Callable[[str], FilterControl] = lambda path: FilterControl(path, timeout_s=5.0),
        make_syncs: Callable[..., Any] | None = None,
        filter_check_timeout: float = 15.0,
    ) -> None:
        self.vra_id = vra_id
        self._make_engine = make_engine
        self._control_factory = control_factory
        # make_syncs(role, engine, controls, previous) -> the role's syncs (need, start, stop, status), or None
        self._make_syncs = make_syncs
        self.filter_check_timeout = filter_check_timeout
        self._lock = threading.Lock()
        self.engines: dict[str, ProtectedVpg] = {}
        self.syncs: dict[str, Any] = {}
        self.roles: dict[str, ProtectRole] = {}
        self._vpg_of: dict[str, str] = {}
        self._filters: dict[str, _FilterState] = {}
        self._controls: dict[str, _Control] = {}
        self._frozen: dict[tuple[str, str], _Frozen] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="filter-control")
        # Filter status checks retry for a while: their own thread, so freezes never wait behind them.
        self._checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filter-check")
        self._stopping = threading.Event()

    # -- roles ---------------------------------------------------------------------------------------------------
    def configure(self, role: ProtectRole) -> ProtectedVpg:
        """Take up (or replace) a role. A replaced role's engine hands what the recovery VRA had not
        acknowledged to the new one as dropped extents (a bitmap sync sends them), and its syncs' state
        carries over; the caller says what new volumes need (``need``)."""
        with self._lock:
            for v in role.volumes:
                other = self._vpg_of.get(v)
                if other is not None and other != role.vpg:
                    raise ValueError(f"volume {v} already belongs to VPG {other}")
        old_syncs = self.syncs.get(role.vpg)
        old = self.remove(role.vpg)
        if old is not None:
            log.info("VPG %s: protect role replaced", role.vpg)
        engine = self._make_engine(role)
        if old is not None:
            for volume, offset, length in old.held_extents():
                if volume in role.volumes:
                    engine.add_dropped(volume, [(offset, length)])
        with self._lock:
            self.engines[role.vpg] = engine
            self.roles[role.vpg] = role
            for v in role.volumes:
                self._vpg_of[v] = role.vpg
            for path in role.filter_controls:
                self._controls.setdefault(path, _Control(path, self._control_factory, self._on_filter_status))
            controls = [self._controls[p] for p in role.filter_controls]
            known = [(f, st.volumes) for f, st in self._filters.items()]
        for filter_id, volumes in known:
            engine.attach_filter(filter_id, volumes)
        syncs = self._make_syncs(role, engine, controls, old_syncs) if self._make_syncs is not None else None
        engine.start()
        if syncs is not None:
            with self._lock:
                self.syncs[role.vpg] = syncs
            syncs.start()
            self._submit_check(controls, 0.0)
        return engine

    def need(self, vpg: str, reason: str, volumes=None) -> bool:
        """A sync of the VPG's volumes (all of them when None) is needed; False if the VPG has no syncs here."""
        syncs = self.syncs.get(vpg)
        if syncs is None:
            return False
        syncs.need(reason, volumes)
        return True

    def remove(self, vpg: str) -> ProtectedVpg | None:
        with self._lock:
            engine = self.engines.pop(vpg, None)
            syncs = self.syncs.pop(vpg, None)
            self.roles.pop(vpg, None)
            for v in [v for v, g in self._vpg_of.items() if g == vpg]:
                del self._vpg_of[v]
        if syncs is not None:
            syncs.stop()
        if engine is not None:
            engine.stop()
        return engine

    def stop(self) -> None:
        self._stopping.set()
        self._checks.shutdown(wait=True)
        for vpg in list(self.engines):
            self.remove(vpg)
        for c in self._controls.values():
            c.close()
        self._pool.shutdown(wait=True)

    # -- SplitHandler ----------------------------------------------------------------------------------------------
    def on_hello(self, filter_id: str, volumes: list[str]) -> None:
        with self._lock:
            state = self._filters.get(filter_id)
            if state is None:
                self._filters[filter_id] = _FilterState(frozenset(volumes))
            else:
                state.volumes = frozenset(volumes)
            engines = {self.engines[g] for g in {self._vpg_of.get(v) for v in volumes} if g in self.engines}
        for e in engines:
            e.attach_filter(filter_id, volumes)
        log.info("IO filter %s attached with volumes %s", filter_id, ", ".join(volumes))
        # A filter (re)connecting may have restarted: its status says whether it lost its dirty map. Its
        # control socket may not be up yet when its split stream is, so this is asked in the background.
        with self._lock:
            controls = [c for c in self._controls.values() if c.filter_id in (None, filter_id)]
        if controls and engines:
            self._submit_check(controls, self.filter_check_timeout)

    def on_write(self, filter_id: str, volume_id: str, offset: int, data: bytes, filter_seq: int) -> None:
        with self._lock:
            state = self._filters.get(filter_id)
            gap = False
            if state is not None:
                if state.last_seq is not None and filter_seq > state.last_seq + 1 + state.marks_since:
                    gap = True
                state.last_seq = filter_seq
                state.marks_since = 0
            engine = self.engines.get(self._vpg_of.get(volume_id, ""))
            gapped = [self.engines[g] for g in {self._vpg_of.get(v) for v in state.volumes} if g in self.engines] if gap else []
        for e in gapped:
            e.on_filter_gap(filter_id)
        if engine is not None:
            engine.on_write(filter_id, volume_id, offset, data)

    def on_mark(self, filter_id: str, checkpoint_id: str, volumes: list[str]) -> None:
        with self._lock:
            state = self._filters.get(filter_id)
            if state is not None:
                state.marks_since += 1
            engines = {self.engines[g] for g in {self._vpg_of.get(v) for v in volumes} if g in self.engines}
        for e in engines:
            e.on_mark(filter_id, checkpoint_id)

    def filter_of(self, volume: str) -> str | None:
        """The filter whose split stream carries ``volume``'s writes (None until it said hello)."""
        with self._lock:
            return next((f for f, st in self._filters.items() if volume in st.volumes), None)

    def _on_filter_status(self, ctl: _Control) -> None:
        """A filter's status was read: its unclean volumes need a delta sync."""
        if not ctl.unclean:
            return
        with self._lock:
            needs = [(vpg, sorted(set(role.volumes) & ctl.unclean)) for vpg, role in self.roles.items()]
        for vpg, volumes in needs:
            if volumes and self.need(vpg, "filter-restarted", volumes):
                log.warning("VPG %s: IO filter %s restarted without its dirty map (volumes %s); delta sync",
                            vpg, ctl.filter_id, ", ".join(volumes))

    def _submit_check(self, controls: list[_Control], timeout: float) -> None:
        if not self._stopping.is_set():
            try:
                self._checks.submit(self._check_filters, controls, timeout)
            except RuntimeError:  # stopping
                pass

    def _check_filters(self, controls: list[_Control], timeout: float) -> None:
        """Ask each filter's status (learning whether it restarted), retrying until ``timeout``."""
        deadline = time.monotonic() + timeout
        for ctl in controls:
            delay = 0.05
            while True:
                try:
                    ctl.request("status")
                    break
                except (OSError, ValueError):
                    if time.monotonic() + delay > deadline or self._stopping.wait(delay):
                        break
                    delay = min(delay * 2, 1.0)
                except Exception:
                    log.exception("IO filter %s: status failed", ctl.path)
                    break

    def on_disconnect(self, filter_id: str) -> None:
        log.info("IO filter %s detached", filter_id)

    # -- checkpoint participant ---------------------------------------------------------------------------------------
    def freeze(self, vpg: str, checkpoint_id: str, timeout_ms: int) -> FreezeResult:
        with self._lock:
            role = self.roles.get(vpg)
            engine = self.engines.get(vpg)
            controls = [self._controls[p] for p in role.filter_controls] if role else []
        if role is None or engine is None:
            return FreezeResult(False, False, False, f"this VRA has no protect role for VPG {vpg}")
        volumes = set(role.volumes)

        def one(ctl: _Control):
            try:
                if ctl.filter_id is None:
                    ctl.request("status")
                mine = sorted(volumes & ctl.volumes)
                if not mine:
                    return ctl, None, ""
                return ctl, ctl.request("freeze", checkpoint_id=checkpoint_id, volumes=mine, timeout_ms=timeout_ms), ""
            except Exception as exc:
                return ctl, None, f"filter {ctl.path}: {exc}"

        t0 = time.monotonic()
        replies = list(self._pool.map(one, controls))
        frozen = [ctl for ctl, r, _ in replies if r is not None]
        marked_ctls = [ctl for ctl, r, _ in replies if r is not None and r.get("marked")]
        covered = set().union(*(c.volumes for c in marked_ctls)) if marked_ctls else set()
        messages = [m for _, _, m in replies if m]
        missing = volumes - covered
        if missing:
            messages.append(f"volumes not marked: {', '.join(sorted(missing))}")
        filter_dirty = [ctl for ctl, r, _ in replies if r is not None and r.get("dirty")]
        unclean = [ctl for ctl, r, _ in replies if r is not None and volumes & ctl.unclean]
        if filter_dirty:
            engine.mark_needs_bitmap_sync(f"IO filter {filter_dirty[0].filter_id} has dirty extents")
        dirty = bool(filter_dirty or unclean) or engine.not_consistent
        with self._lock:
            self._frozen[(vpg, checkpoint_id)] = _Frozen(frozen, {c.filter_id for c in marked_ctls})
        log.debug("VPG %s: froze %d filters for %s in %.1f ms", vpg, len(frozen), checkpoint_id,
                  (time.monotonic() - t0) * 1000)
        return FreezeResult(True, not missing, dirty, "; ".join(messages))

    def thaw(self, vpg: str, checkpoint_id: str, decision: Decision | None) -> ThawResult:
        with self._lock:
            frozen = self._frozen.pop((vpg, checkpoint_id), None)
            engine = self.engines.get(vpg)
        if frozen is None or engine is None:
            return ThawResult(False, False, f"checkpoint {checkpoint_id} of VPG {vpg} is not frozen here")

        def one(ctl: _Control):
            try:
                return ctl.request("thaw", checkpoint_id=checkpoint_id), ""
            except Exception as exc:
                return None, f"filter {ctl.path}: {exc}"

        replies = list(self._pool.map(one, frozen.controls))
        expired = any(r is None or r.get("expired") for r, _ in replies)
        messages = [m for _, m in replies if m]
        if decision is None:
            engine.abort_checkpoint(checkpoint_id)
        else:
            engine.commit_checkpoint(
                checkpoint_id,
                frozen.filters,
                tag=decision.tag,
                consistent=decision.consistent and not expired,
                participants=decision.participants,
            )
        return ThawResult(True, expired, "; ".join(messages))

    def status(self) -> list[dict]:
        with self._lock:
            pairs = [(e, self.syncs.get(vpg)) for vpg, e in self.engines.items()]
        out = []
        for engine, syncs in pairs:
            st = engine.status()
            if syncs is not None:
                st["sync"] = syncs.status()
            out.append(st)
        return out


class LocalParticipant:
    """This VRA as a checkpoint participant of its own coordinator."""

    def __init__(self, side: ProtectSide) -> None:
        self.side = side
        self.vra_id = side.vra_id

    def freeze(self, vpg: str, checkpoint_id: str, timeout_ms: int) -> FreezeResult:
        return self.side.freeze(vpg, checkpoint_id, timeout_ms)

    def thaw(self, vpg: str, checkpoint_id: str, decision: Decision | None) -> ThawResult:
        return self.side.thaw(vpg, checkpoint_id, decision)
