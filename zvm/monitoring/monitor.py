"""The monitoring loop: probe the VRAs and the peer site, then raise, update and clear alerts and set
each VPG's status from its figures (zvm.monitoring.rules).

``Monitor.run_once()`` is one pass (tests call it); ``start``/``stop`` repeat it every ``interval``.
The probes are seams: ``vra_probe(vra) -> dict | None`` returns the VRA's status (per-VPG counters) or
None when it does not answer; ``peer_probe(peer) -> bool``. A VPG's figures come from its VRAs' counters
(``rpo_ms``, ``journal_bytes``, ``history_s``, ``bytes_per_s``, ``writes_per_s``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from zvm import db as zdb
from zvm import models as m
from zvm.monitoring.rules import AlertSpec, VpgFigures, unreachable_alert, vpg_alerts, vpg_status

log = logging.getLogger("zvm.monitoring")


def figures(vpg: m.Vpg, now: float) -> VpgFigures:
    return VpgFigures(
        identifier=vpg.identifier, name=vpg.name, status=vpg.status, paused=bool(vpg.paused),
        rpo_threshold_s=vpg.rpo_threshold_seconds, actual_rpo_s=vpg.actual_rpo_seconds,
        history_configured_s=vpg.journal_history_hours * 3600, history_actual_s=vpg.history_seconds or 0,
        journal_used_mb=vpg.journal_used_mb or 0.0, journal_warning_mb=vpg.journal_warning_mb,
        journal_hard_limit_mb=vpg.journal_hard_limit_mb, age_s=now - vpg.created_at)


def reconcile_alerts(wanted: list[AlertSpec], now: float, scope: set[str] | None = None) -> dict[str, int]:
    """Make the active alerts equal ``wanted``: raise new ones, update changed ones, clear the rest
    (of the codes in ``scope``, if given). Call inside a transaction."""
    by_key = {a.key: a for a in wanted}
    active = m.Alert.select().where(m.Alert.cleared_at.is_null())
    if scope is not None:
        active = active.where(m.Alert.code.in_(sorted(scope)))
    raised = updated = cleared = 0
    seen = set()
    for alert in active:
        key = (alert.code, alert.entity, alert.entity_id)
        spec = by_key.get(key)
        if spec is None or key in seen:
            alert.cleared_at = now
            alert.updated_at = now
            alert.save()
            m.Event.create(kind="AlertCleared", category="Alert", user="system",
                           description=f"cleared: {alert.description}", entity_id=alert.entity_id,
                           result="Succeeded", detail=alert.code, started_at=now, completed_at=now)
            cleared += 1
            continue
        seen.add(key)
        if (alert.level, alert.description) != (spec.level, spec.description):
            alert.level, alert.description, alert.updated_at = spec.level, spec.description, now
            alert.save()
            updated += 1
    for key, spec in by_key.items():
        if key not in seen:
            m.Alert.create(code=spec.code, level=spec.level, entity=spec.entity, entity_id=spec.entity_id,
                           description=spec.description, raised_at=now, updated_at=now)
            m.Event.create(kind="AlertRaised", category="Alert", user="system", description=spec.description,
                           entity_id=spec.entity_id, result="Succeeded", detail=spec.code, started_at=now,
                           completed_at=now)
            raised += 1
    return {"raised": raised, "updated": updated, "cleared": cleared}


class Monitor:
    def __init__(self, zvm, *, vra_probe: Callable | None = None, peer_probe: Callable | None = None,
                 interval: float = 15.0):
        self.zvm = zvm
        self.vra_probe = vra_probe
        self.peer_probe = peer_probe
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
            return reconcile_alerts(wanted, now)

    def _probe(self, now: float) -> None:
        if self.vra_probe is not None:
            for vra in m.Vra.select().where(m.Vra.state == "Installed"):
                status = self.vra_probe(vra)
                with zdb.transaction():
                    if status is None:
                        m.Vra.update(reachable=False).where(m.Vra.id == vra.id).execute()
                        continue
                    m.Vra.update(reachable=True, last_seen=now).where(m.Vra.id == vra.id).execute()
                    for vpg_id, counters in (status.get("vpgs") or {}).items():
                        self._apply_counters(vpg_id, counters, now)
        if self.peer_probe is not None:
            for peer in m.PeerSite.select():
                ok = self.peer_probe(peer)
                with zdb.transaction():
                    fields = {"state": "Paired", "last_seen": now} if ok else {"state": "Unreachable"}
                    if peer.state != "Unpairing":
                        m.PeerSite.update(**fields).where(m.PeerSite.id == peer.id).execute()

    @staticmethod
    def _apply_counters(vpg_identifier: str, c: dict, now: float) -> None:
        fields: dict = {"last_report_at": now}
        if "rpo_ms" in c:
            fields["actual_rpo_seconds"] = int(round(c["rpo_ms"] / 1000))
        if "journal_bytes" in c:
            fields["journal_used_mb"] = c["journal_bytes"] / (1 << 20)
        if "history_s" in c:
            fields["history_seconds"] = int(c["history_s"])
        if "bytes_per_s" in c:
            fields["throughput_mb"] = c["bytes_per_s"] / (1 << 20)
        if "writes_per_s" in c:
            fields["iops"] = int(c["writes_per_s"])
        m.Vpg.update(**fields).where(m.Vpg.identifier == vpg_identifier).execute()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="zvm-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - monitoring outlives a failed pass
                log.exception("monitoring pass failed")
            finally:
                self.zvm.db.close()
