"""The monitoring loop: probe the VRAs and the peer site, then raise, update and clear alerts and set
each VPG's status from its figures (zvm.monitoring.rules).

``Monitor.run_once()`` is one pass (tests call it); ``start``/``stop`` repeat it every ``interval``.
The VRAs are asked through the VRA control seam (zvm.vra_control: Status, ListCheckpoints); the peer
site through ``peer_probe(peer) -> bool``. A VPG's figures come from its VRAs' roles: RPO from the protect
roles' ``rpo_ms``, throughput and IOPS from their ``bytes`` and ``writes`` between two passes, journal use
and history from the recover role's ``journal_bytes`` and ``history_covered_s``; its checkpoints are the
ones the recovery VRA's journal lists (asked of the paired site's ZVM when the VPG recovers there). A VPG leaves Initializing (InitialSync) for MeetingSLA when every
role reports ok and the journal holds a consistent checkpoint.

A recover role whose journal is corrupt (or failed) raises RecoveryJournalCorrupt on the VPG and sets it to
status Error, substatus Error (replication is refused); it stays so until the journal is usable again (a
Force Sync discards it: zvm.orchestration.journal_repair), and an unreachable recovery VRA leaves it as last
seen. When the journal is usable again and the VPG still shows that error, it starts over: Initializing,
DeltaSync, until a consistent checkpoint exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ZvmError
from zvm.monitoring.alerts import reconcile_alerts, recovery_alerts
from zvm.monitoring.rules import (
    JOURNAL_BROKEN_STATES,
    AlertSpec,
    VpgFigures,
    journal_alert,
    unreachable_alert,
    vpg_alerts,
    vpg_status,
)
from zvm.peer.messages import checkpoints_from_json
from zvm.placement import peer_client, vra_ref
from zvr_common.loop import Loop

log = logging.getLogger("zvm.monitoring")

# Substatuses a recovery operation sets and clears itself (zvm.orchestration.recovery)
OPERATION_SUBSTATUSES = {"Testing", "StoppingTest", "FailingOver", "FailingOverBeforeCommit", "FailingOverCommitting",
                         "FailingOverRollingBack", "Moving", "MovingBeforeCommit", "MovingCommitting",
                         "MovingRollingBack", "WaitingForPeer", "NeedsConfiguration"}


def figures(vpg: m.Vpg, now: float) -> VpgFigures:
    return VpgFigures(
        identifier=vpg.identifier, name=vpg.name, status=vpg.status, paused=bool(vpg.paused),
        rpo_threshold_s=vpg.rpo_threshold_seconds, actual_rpo_s=vpg.actual_rpo_seconds,
        history_configured_s=vpg.journal_history_hours * 3600, history_actual_s=vpg.history_seconds or 0,
        journal_used_mb=vpg.journal_used_mb or 0.0, journal_warning_mb=vpg.journal_warning_mb,
        journal_hard_limit_mb=vpg.journal_hard_limit_mb, age_s=now - vpg.created_at)


class Monitor(Loop):
    """A zvr_common.loop.Loop: its first pass comes one interval after start."""

    def __init__(self, zvm, *, control=None, peer_probe: Callable | None = None, interval: float = 15.0):
        super().__init__("zvm-monitor", interval, start_delay=interval, logger=log)
        self.zvm = zvm
        self.control = control  # a zvm.vra_control.VraControl; None: the ZVM's own
        self.peer_probe = peer_probe
        self._rates: dict[str, tuple[float, float, float]] = {}  # vpg -> (time, bytes, writes) last seen
        self._journals: dict[str, AlertSpec] = {}  # vpg -> its RecoveryJournalCorrupt, as last seen

    def run_once(self, now: float | None = None) -> dict[str, int]:
        zdb.connect(self.zvm.db)
        now = now or time.time()
        self._probe(now)
        wanted: list[AlertSpec] = []
        with zdb.transaction():
            for vpg in m.Vpg.select():
                f = figures(vpg, now)
                wanted += vpg_alerts(f)
                status = vpg_status(f)
                if status != vpg.status:
                    m.Vpg.update(status=status, updated_at=now).where(m.Vpg.id == vpg.id).execute()
            for vra in m.Vra.select().where(m.Vra.state == "Installed"):
                spec = unreachable_alert("Vra", vra.identifier, vra.name, vra.last_seen, vra.created_at, now)
                wanted += [spec] if spec else []
            for peer in m.PeerSite.select(m.PeerSite, m.Site).join(m.Site):
                spec = unreachable_alert("Site", peer.site.identifier, peer.site.name, peer.last_seen,
                                         peer.paired_at, now)
                wanted += [spec] if spec else []
            known = {v.identifier for v in m.Vpg.select(m.Vpg.identifier)}
            for vpg_id in [v for v in self._journals if v not in known]:
                del self._journals[vpg_id]
            wanted += list(self._journals.values())
            wanted += recovery_alerts()
            return reconcile_alerts(wanted, now)

    # --- probes -----------------------------------------------------------------------------------------

    def _probe(self, now: float) -> None:
        control = self.control or getattr(self.zvm, "vra_control", None)
        if control is not None:
            self._probe_vras(control, now)
        if self.peer_probe is not None:
            for peer in m.PeerSite.select():
                ok = self.peer_probe(peer)
                with zdb.transaction():
                    fields = {"state": "Paired", "last_seen": now} if ok else {"state": "Unreachable"}
                    if peer.state != "Unpairing":
                        m.PeerSite.update(**fields).where(m.PeerSite.id == peer.id).execute()

    def _probe_vras(self, control, now: float) -> None:
        reports: dict[str, dict[str, dict]] = {}  # vpg -> vra id -> {role: status}
        for vra in m.Vra.select().where(m.Vra.state == "Installed"):
            try:
                status = control.status(vra_ref(vra)) if vra.control_address else None
            except ZvmError:
                status = None
            with zdb.transaction():
                if status is None:
                    m.Vra.update(reachable=False).where(m.Vra.id == vra.id).execute()
                    continue
                m.Vra.update(reachable=True, last_seen=now).where(m.Vra.id == vra.id).execute()
            for vpg_id, roles in status.items():
                reports.setdefault(vpg_id, {})[vra.identifier] = roles
        local = self.zvm.local_site_id()
        for vpg in m.Vpg.select(m.Vpg, m.Site).join(m.Site, on=(m.Vpg.recovery_site == m.Site.id)):
            by_vra = reports.get(vpg.identifier, {})
            # this site's protect roles only count for a VPG it protects (not for the mirror of a peer's)
            protect = [r["protect"] for r in by_vra.values() if "protect" in r] if vpg.protected_site_id == local else []
            if vpg.recovery_site_id == local:
                recover_at = next((v for v, roles in by_vra.items() if "recover" in roles), None)
                recover = by_vra[recover_at]["recover"] if recover_at else None
                listed = self._local_checkpoints(control, vpg, recover_at)
            else:
                recover, listed = self._peer_recovery(vpg)
            if protect or recover is not None:
                self._apply_reports(vpg, protect, recover, listed, now)

    @staticmethod
    def _local_checkpoints(control, vpg: m.Vpg, vra_id: str | None) -> list | None:
        vra = m.Vra.get_or_none(m.Vra.identifier == vra_id) if vra_id else None
        if vra is None:
            return None
        try:
            return control.list_checkpoints(vra_ref(vra), vpg.identifier)
        except ZvmError:
            return None

    def _peer_recovery(self, vpg: m.Vpg) -> tuple[dict | None, list | None]:
        """A paired recovery site's view of the VPG: its recover role and the journal's checkpoints."""
        try:
            reply = peer_client(self.zvm, vpg.recovery_site).vpg_status(vpg.identifier)
        except ZvmError:
            return None, None
        return reply.get("Recover"), checkpoints_from_json(reply.get("Checkpoints"))

    def _apply_reports(self, vpg: m.Vpg, protect: list[dict], recover: dict | None, listed: list | None,
                       now: float) -> None:
        fields: dict = {"last_report_at": now}
        if protect:
            fields["actual_rpo_seconds"] = int(round(max(p["counters"].get("rpo_ms", 0.0) for p in protect) / 1000))
            total_bytes = sum(p["counters"].get("bytes", 0.0) for p in protect)
            total_writes = sum(p["counters"].get("writes", 0.0) for p in protect)
            last = self._rates.get(vpg.identifier)
            if last is not None and now > last[0]:
                fields["throughput_mb"] = max(0.0, total_bytes - last[1]) / (now - last[0]) / (1 << 20)
                fields["iops"] = int(max(0.0, total_writes - last[2]) / (now - last[0]))
            self._rates[vpg.identifier] = (now, total_bytes, total_writes)
        if recover is not None:
            fields["journal_used_mb"] = recover["counters"].get("journal_bytes", 0.0) / (1 << 20)
            fields["history_seconds"] = int(recover["counters"].get("history_covered_s", 0.0))
        checkpoints = self._store_checkpoints(vpg, listed) if listed is not None else []
        broken = recover is not None and recover["state"] in JOURNAL_BROKEN_STATES
        restart = False  # the journal is usable again after it was broken: the VPG starts over
        if recover is not None:
            alert = journal_alert(vpg.identifier, vpg.name, recover["state"], recover.get("error", ""))
            if alert is not None:
                self._journals[vpg.identifier] = alert
            elif self._journals.pop(vpg.identifier, None) is not None or _journal_alert_active(vpg):
                restart = (vpg.status, vpg.substatus) == ("Error", "Error")
        mirror = vpg.protected_site_id != self.zvm.local_site_id()  # a peer's VPG that this site recovers
        healthy = ((mirror or (bool(protect) and all(p["state"] == "ok" for p in protect)))
                   and recover is not None and recover["state"] == "ok")
        if vpg.substatus in OPERATION_SUBSTATUSES:
            pass  # a recovery operation owns the status until it ends
        elif broken:
            fields.update(status="Error", substatus="Error")  # replication is refused until a Force Sync
        elif vpg.paused:
            pass  # ReplicationPausedUserInitiated until resumed
        elif any(p.get("needs_bitmap_sync") for p in protect):
            fields["substatus"] = "BitmapSync"
        elif vpg.status == "Initializing" and vpg.substatus in ("InitialSync", "DeltaSync", "BitmapSync"):
            if healthy and any(c.consistent for c in checkpoints):
                fields.update(status="MeetingSLA", substatus="None")
        elif any(p.get("substatus") == "DeltaSync" for p in protect):
            fields["substatus"] = "DeltaSync"  # a forced sync (or a restarted VRA's) runs
        elif vpg.substatus in ("BitmapSync", "DeltaSync") and healthy and not any(p.get("substatus") for p in protect):
            fields["substatus"] = "None"
        if restart:
            fields.update(status="Initializing", substatus="DeltaSync")  # history restarts
        with zdb.transaction():
            m.Vpg.update(**fields).where(m.Vpg.id == vpg.id).execute()

    @staticmethod
    def _store_checkpoints(vpg: m.Vpg, listed: list) -> list:
        """The checkpoint table of the VPG = the checkpoints its journal holds now."""
        with zdb.transaction():
            known = {c.identifier for c in m.Checkpoint.select(m.Checkpoint.identifier).where(m.Checkpoint.vpg == vpg)}
            for c in listed:
                if c.checkpoint_id not in known:
                    m.Checkpoint.create(identifier=c.checkpoint_id, vpg=vpg, timestamp=c.timestamp_s, tag=c.tag,
                                        consistent=c.consistent)
            gone = known - {c.checkpoint_id for c in listed}
            if gone:
                m.Checkpoint.delete().where(m.Checkpoint.vpg == vpg, m.Checkpoint.identifier.in_(sorted(gone))).execute()
            newest = max((c.timestamp_s for c in listed), default=None)
            if newest is not None:
                m.Vpg.update(last_checkpoint_at=newest).where(m.Vpg.id == vpg.id).execute()
        return listed

    def after_pass(self) -> None:
        self.zvm.db.close()


def _journal_alert_active(vpg: m.Vpg) -> bool:
    """A RecoveryJournalCorrupt alert of the VPG is still raised (from before this monitor started)."""
    return m.Alert.select().where(m.Alert.code == "RecoveryJournalCorrupt", m.Alert.entity_id == vpg.identifier,
                                  m.Alert.cleared_at.is_null()).exists()
