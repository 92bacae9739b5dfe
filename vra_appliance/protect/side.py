"""The protect side of one VRA: its filters' split streams -> the ``ProtectedVpg`` of each volume's VPG.

``ProtectSide`` is the ``SplitHandler`` of the VRA's ``SplitListener`` (vra_appliance.iofilter.split_protocol):
it routes every write to the VPG of its volume, notices gaps in a filter's ``filter_seq`` (the filter put
writes in its dirty map: the VPGs on that filter need a bitmap sync), and is the checkpoint ``Participant``
of this VRA: ``freeze`` / ``thaw`` drive the local filters' control sockets for one VPG.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
    """One filter's control socket, shared by the VPGs on that filter (one request at a time)."""

    def __init__(self, path: str, factory: Callable[[str], FilterControl]) -> None:
        self.path = path
        self._factory = factory
        self._client: FilterControl | None = None
        self._lock = threading.Lock()
        self.filter_id: str | None = None
        self.volumes: frozenset[str] = frozenset()

    def request(self, op: str, **fields) -> dict:
        with self._lock:
            if self._client is None:
                self._client = self._factory(self.path)
            try:
                if self.filter_id is None:
                    st = self._client.status()
                    self.filter_id = st["filter_id"]
                    self.volumes = frozenset(st.get("volumes", {}))
                return self._client.request(op, **fields)
            except (OSError, ValueError):
                self._client.close()
                self._client = None
                self.filter_id = None
                raise

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
    ) -> None:
        self.vra_id = vra_id
        self._make_engine = make_engine
        self._control_factory = control_factory
        self._lock = threading.Lock()
        self.engines: dict[str, ProtectedVpg] = {}
        self.roles: dict[str, ProtectRole] = {}
        self._vpg_of: dict[str, str] = {}
        self._filters: dict[str, _FilterState] = {}
        self._controls: dict[str, _Control] = {}
        self._frozen: dict[tuple[str, str], _Frozen] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="filter-control")

    # -- roles ---------------------------------------------------------------------------------------------------
    def configure(self, role: ProtectRole) -> ProtectedVpg:
        old = self.remove(role.vpg)
        if old is not None:
            log.info("VPG %s: protect role replaced", role.vpg)
        engine = self._make_engine(role)
        with self._lock:
            for v in role.volumes:
                other = self._vpg_of.get(v)
                if other is not None and other != role.vpg:
                    raise ValueError(f"volume {v} already belongs to VPG {other}")
            self.engines[role.vpg] = engine
            self.roles[role.vpg] = role
            for v in role.volumes:
                self._vpg_of[v] = role.vpg
            for path in role.filter_controls:
                self._controls.setdefault(path, _Control(path, self._control_factory))
            known = [(f, st.volumes) for f, st in self._filters.items()]
        for filter_id, volumes in known:
            engine.attach_filter(filter_id, volumes)
        engine.start()
        return engine

    def remove(self, vpg: str) -> ProtectedVpg | None:
        with self._lock:
            engine = self.engines.pop(vpg, None)
            self.roles.pop(vpg, None)
            for v in [v for v, g in self._vpg_of.items() if g == vpg]:
                del self._vpg_of[v]
        if engine is not None:
            engine.stop()
        return engine

    def stop(self) -> None:
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
        dirty = any(r.get("dirty") for _, r, _ in replies if r is not None) or engine.needs_bitmap_sync
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
            engines = list(self.engines.values())
        return [e.status() for e in engines]


class LocalParticipant:
    """This VRA as a checkpoint participant of its own coordinator."""

    def __init__(self, side: ProtectSide) -> None:
        self.side = side
        self.vra_id = side.vra_id

    def freeze(self, vpg: str, checkpoint_id: str, timeout_ms: int) -> FreezeResult:
        return self.side.freeze(vpg, checkpoint_id, timeout_ms)

    def thaw(self, vpg: str, checkpoint_id: str, decision: Decision | None) -> ThawResult:
        return self.side.thaw(vpg, checkpoint_id, decision)
