"""The monitoring loop: every second, ask every VRA (and, for a VPG another site recovers, that site's ZVM) how
its roles are, then set each VPG's figures, status and substatus, record its history, its events and its
alerts, in one transaction.

RPO (docs/OPERATIONS.md, "Monitoring"): the age of the newest consistent checkpoint that is durable in the
recovery journal, as the recovery side reports it (the recover role's counter
``newest_consistent_checkpoint_s``, or the checkpoints its journal lists): everything written before it
survives a loss of the protected site now, anything after may not. It is computed at every pass from the
last such time the ZVM knows, whether or not anything answered, so a silent protect or recovery VRA, a cut
WAN, a stalled stream, a paused VPG or a sync (whose checkpoints are not consistent) all make it grow from the
last thing known durable; it never goes back to 0 for lack of news. Checkpoint times are the protect VRA's
clock: the sites' clocks must agree (NTP). Null until the first consistent checkpoint.

Why the RPO grows, when monitoring can tell (a protect or recovery VRA that does not answer, a recovery
site that does not, a stream that is down, no new consistent checkpoint for ``STALLED_AFTER_S``), is the
substatus ``DisconnectedFromPeer`` (unless a sync, a pause or a recovery operation gives it its own) and the
text of the ``VpgRpoOverThreshold`` alert and of the ``VpgStatusChanged`` event.

Freshness: one pass a second, its questions asked in parallel with short timeouts (zvm.monitoring.probe);
events of what happened between passes come from the VRAs' own records (zvm.monitoring.events). A pass
whose transaction meets a locked database retries it; a pass that still fails changes nothing that the next
one does not recompute (the RPO comes from the time known durable, not from the last value written).

A recover role whose journal is corrupt (or failed) raises RecoveryJournalCorrupt on the VPG and sets it to
status Error, substatus Error (replication is refused); it stays so until the journal is usable again (a
Force Sync discards it: zvm.orchestration.journal_repair). When the journal is usable again and the VPG still
shows that error, it starts over: Initializing, DeltaSync, until a consistent checkpoint exists. A VPG leaves
Initializing for MeetingSLA when every role reports ok and the journal holds a consistent checkpoint.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import peewee

from zvm import db as zdb
from zvm import models as m
from zvm.errors import TransientError, ZvmError
from zvm.monitoring import history
from zvm.monitoring.alerts import reconcile_alerts, recovery_alerts, verdict_alerts
from zvm.monitoring.events import EventLog, clock
from zvm.monitoring.probe import Round, probe
from zvm.monitoring.rules import (
    JOURNAL_BROKEN_STATES,
    JOURNAL_TAKING_STATES,
    REPLICATING,
    AlertSpec,
    VpgFigures,
    journal_alert,
    unreachable_alert,
    vpg_alerts,
    vpg_status,
)
from zvm.peer.messages import checkpoints_to_json
from zvm.placement import vra_ref
from zvr_common.loop import Loop

log = logging.getLogger("zvm.monitoring")

INTERVAL_S = 1.0
PEER_PROBE_EVERY_S = 5.0
PRUNE_EVERY_S = 300.0
LIST_EVERY_S = 30.0  # the journal's checkpoints are listed when the newest changed, and at least this often
LIST_LAG_S = 10.0  # a checkpoint this young may be newer than an empty list of the journal's checkpoints
STALLED_AFTER_S = 15.0  # no new consistent checkpoint for this long while every role answers: stalled
WRITE_ATTEMPTS = 5
RECOVER_REPORT_MAX_AGE_S = 1.5  # a peer's question is answered from the last pass when it is this fresh
STREAMING = ("ok", "syncing", "bitmap-sync-needed")  # protect role states in which the stream runs

# Substatuses a recovery operation sets and clears itself (zvm.orchestration.recovery)
OPERATION_SUBSTATUSES = {"Testing", "StoppingTest", "FailingOver", "FailingOverBeforeCommit", "FailingOverCommitting",
                         "FailingOverRollingBack", "Moving", "MovingBeforeCommit", "MovingCommitting",
                         "MovingRollingBack", "WaitingForPeer", "NeedsConfiguration"}
DISCONNECTED = "DisconnectedFromPeer"


def figures(vpg: m.Vpg, now: float, reason: str = "") -> VpgFigures:
    return VpgFigures(
        identifier=vpg.identifier, name=vpg.name, status=vpg.status, paused=bool(vpg.paused),
        rpo_threshold_s=vpg.rpo_threshold_seconds, actual_rpo_s=vpg.actual_rpo_seconds,
        history_configured_s=vpg.journal_history_hours * 3600, history_actual_s=vpg.history_seconds or 0,
        journal_used_mb=vpg.journal_used_mb or 0.0, journal_warning_mb=vpg.journal_warning_mb,
        journal_hard_limit_mb=vpg.journal_hard_limit_mb, age_s=now - vpg.created_at, rpo_reason=reason)


@dataclass
class VpgWatch:
    """What the monitor knows of a VPG between passes."""

    durable_s: float | None = None  # the newest consistent checkpoint known durable in the recovery journal
    rates: tuple | None = None  # (time, bytes written, bytes sent, writes) of the last pass
    rate_figures: dict = field(default_factory=dict)
    protect_vras: set = field(default_factory=set)  # VRAs seen holding the VPG's protect role
    recover_vra: str | None = None
    seen: tuple | None = None  # (status, substatus) as last seen
    listed_marker: tuple | None = None
    listed_at: float = 0.0
    reason: str = ""


class Monitor(Loop):
    """A zvr_common.loop.Loop: its first pass comes one interval after start."""

    def __init__(self, zvm, *, control=None, peer_probe=None, interval: float = INTERVAL_S, workers: int = 16):
        super().__init__("zvm-monitor", interval, start_delay=interval, logger=log)
        self.zvm = zvm
        self.control = control  # a zvm.vra_control.VraControl; None: the ZVM's own
        self.peer_probe = peer_probe
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._watch: dict[str, VpgWatch] = {}
        self._journals: dict[str, AlertSpec] = {}  # vpg -> its RecoveryJournalCorrupt, as last seen
        self._journals_checked: set[str] = set()  # VPGs whose alert from before this monitor was looked for
        self._vras: dict[str, m.Vra] = {}  # the installed VRAs of this pass
        # VPG -> (when, the peer's vpg_status answer) for a VPG recovered here (zvm.peer.service answers from it)
        self._recover_seen: dict[str, tuple[float, dict]] = {}
        self._recorder = history.Recorder()
        self._buckets: list[history.Bucket] = []  # finished history buckets not written yet
        self._listed: dict[int, list] = {}  # vpg id -> checkpoints listed this pass, to store
        self.events = EventLog()
        self._peers_probed_at = 0.0
        self._pruned_at = 0.0

    # --- the pass ---------------------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> dict[str, int]:
        zdb.connect(self.zvm.db)
        now = now or time.time()
        self._probe_peers(now)
        control = self.control or getattr(self.zvm, "vra_control", None)
        vras = list(m.Vra.select().where(m.Vra.state == "Installed"))
        local = self.zvm.local_site_id()
        vpgs = list(m.Vpg.select(m.Vpg, m.Site).join(m.Site, on=(m.Vpg.recovery_site == m.Site.id)))
        remote = [v for v in vpgs if v.protected_site_id == local and v.recovery_site_id != local]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="zvm-monitor-probe")
        rnd = probe(self._pool, self.zvm, control, vras, remote)
        names = {v.identifier: v.name for v in vras}
        self._vras = {v.identifier: v for v in vras}
        by_vpg: dict[str, dict[str, dict]] = {}
        for vra_id, status in rnd.vras.items():
            for vpg_id, roles in (status or {}).items():
                by_vpg.setdefault(vpg_id, {})[vra_id] = roles
        updates = {vpg.id: self._assess_one(control, vpg, by_vpg.get(vpg.identifier, {}), rnd, names, local, now)
                   for vpg in vpgs}
        assessed = {vpg.id: (vpg.status, vpg.substatus) for vpg in vpgs}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with zdb.transaction():
                    result = self._write(now, rnd, updates, assessed)
                break
            except TransientError:  # "database is locked" past the busy timeout: again, soon
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        self._buckets, self._listed, self.events.pending = [], {}, []
        return result

    def _write(self, now: float, rnd: Round, updates: dict[int, dict],
               assessed: dict[int, tuple[str, str]]) -> dict[str, int]:
        """The pass's figures into the database, in one transaction. A VPG whose status or substatus changed
        since the pass read it (a task, or the peer's part of a recovery operation, wrote it meanwhile) keeps
        what was written: the pass's verdict was about the row as it was, and the next pass judges it again."""
        reachable = [v for v, st in rnd.vras.items() if st is not None]
        silent = [v for v, st in rnd.vras.items() if st is None]
        if reachable:
            m.Vra.update(reachable=True, last_seen=now).where(m.Vra.identifier.in_(reachable)).execute()
        if silent:
            m.Vra.update(reachable=False).where(m.Vra.identifier.in_(silent)).execute()
        wanted: list[AlertSpec] = []
        for vpg in m.Vpg.select():
            fields = {k: v for k, v in (updates.get(vpg.id) or {}).items() if getattr(vpg, k) != v}  # changes only
            if assessed.get(vpg.id, (vpg.status, vpg.substatus)) != (vpg.status, vpg.substatus):
                fields.pop("status", None)
                fields.pop("substatus", None)
            w = self._watch.get(vpg.identifier, VpgWatch())
            if vpg.id in self._listed:
                self._store_checkpoints(vpg, self._listed[vpg.id], now)
            for name, value in fields.items():
                setattr(vpg, name, value)
            f = figures(vpg, now, w.reason)
            wanted += vpg_alerts(f)
            status = vpg_status(f)
            if status != vpg.status:
                fields.update(status=status, updated_at=now)
                vpg.status = status
            if fields:
                m.Vpg.update(**fields).where(m.Vpg.id == vpg.id).execute()
            state = (vpg.status, vpg.substatus)
            if w.seen is not None and state != w.seen:
                self.events.status_changed(vpg, w.seen, state, w.reason, now)
            w.seen = state
        for vra in m.Vra.select().where(m.Vra.state == "Installed"):
            spec = unreachable_alert("Vra", vra.identifier, vra.name, vra.last_seen, vra.created_at, now)
            wanted += [spec] if spec else []
        for peer in m.PeerSite.select(m.PeerSite, m.Site).join(m.Site):
            spec = unreachable_alert("Site", peer.site.identifier, peer.site.name, peer.last_seen, peer.paired_at, now)
            wanted += [spec] if spec else []
        known = {v.identifier for v in m.Vpg.select(m.Vpg.identifier)}
        for vpg_id in [v for v in self._watch if v not in known]:
            del self._watch[vpg_id]
        for vpg_id in [v for v in self._journals if v not in known]:
            del self._journals[vpg_id]
        for vpg_id in [v for v in self._recover_seen if v not in known]:
            del self._recover_seen[vpg_id]
        wanted += list(self._journals.values())
        wanted += recovery_alerts() + verdict_alerts()
        self.events.write()
        history.store(self._buckets)
        if now - self._pruned_at >= PRUNE_EVERY_S:
            history.prune(now)
            self._pruned_at = now
        return reconcile_alerts(wanted, now)

    # --- one VPG ----------------------------------------------------------------------------------------

    def _assess_one(self, *args) -> dict:
        """``_assess``, with a bug in one VPG's figures logged and kept from stopping every other VPG's."""
        try:
            return self._assess(*args)
        except ZvmError:
            raise
        except Exception:  # noqa: BLE001 - one VPG's bug must not freeze the others' figures
            log.exception("monitoring VPG %s failed; its figures wait for the next pass", args[1].identifier)
            return {}

    def _assess(self, control, vpg: m.Vpg, by_vra: dict[str, dict], rnd: Round, names: dict, local: int,
                now: float) -> dict:
        """The VPG's new figures and substatus from this pass's answers (no database write)."""
        w = self._watch.get(vpg.identifier)
        if w is None:
            w = self._watch[vpg.identifier] = VpgWatch(durable_s=_durable_in_db(vpg))
        mirror = vpg.protected_site_id != local  # a peer's VPG that this site recovers
        protect = {} if mirror else {v: roles["protect"] for v, roles in by_vra.items() if "protect" in roles}
        w.protect_vras |= set(protect)
        # a VRA that answers without the role, or is no longer installed, no longer holds it
        w.protect_vras = {v for v in w.protect_vras if v in rnd.vras and (rnd.vras[v] is None or v in protect)}
        silent_protect = sorted(v for v in w.protect_vras if rnd.vras.get(v) is None)
        why_recover = ""
        if vpg.recovery_site_id == local:
            recover_at = next((v for v, roles in by_vra.items() if "recover" in roles), None)
            recover = by_vra[recover_at]["recover"] if recover_at else None
            w.recover_vra = recover_at or w.recover_vra or vpg.recovery_vra
            if recover is None and w.recover_vra and rnd.vras.get(w.recover_vra, "gone") is None:
                why_recover = f"the recovery VRA {names.get(w.recover_vra, w.recover_vra)} does not answer"
            listed = self._list(control, vpg, recover_at, recover, w, now)
            if recover is not None:
                before = self._recover_seen.get(vpg.identifier)
                known = checkpoints_to_json(listed) if listed is not None else before[1]["Checkpoints"] if before else None
                if known is not None:
                    self._recover_seen[vpg.identifier] = (time.monotonic(), {
                        "Recover": recover, "Checkpoints": known, "Vra": recover_at})
        else:
            remote = rnd.remote.get(vpg.identifier)
            recover, listed = (remote.recover, remote.checkpoints) if remote else (None, None)
            why_recover = remote.why if remote is not None and remote.recover is None else ""
        if listed is not None:
            self._listed[vpg.id] = listed
        newest = [recover["counters"].get("newest_consistent_checkpoint_s", 0.0)] if recover is not None else []
        newest += [c.timestamp_s for c in listed or [] if c.consistent]
        if max(newest, default=0.0) > (w.durable_s or 0.0):
            w.durable_s = max(newest)
        fields: dict = {}
        rpo = None if w.durable_s is None else max(0.0, now - w.durable_s)
        if rpo is not None:
            fields["actual_rpo_seconds"] = int(rpo)
        if recover is not None or protect:
            fields["last_report_at"] = now
        self._rates(w, protect, silent_protect, recover, mirror, now, fields)
        if recover is not None:
            fields["journal_used_mb"] = recover["counters"].get("journal_bytes", 0.0) / (1 << 20)
            fields["history_seconds"] = int(recover["counters"].get("history_covered_s", 0.0))
            if recover.get("error", "").startswith("torn journal tail cut"):
                self.events.torn_tail(vpg, recover["error"], now)
        for vra_id, p in protect.items():
            self.events.syncs(vpg, names.get(vra_id, vra_id), p.get("syncs") or [])
            self.events.journal_lost(vpg, vra_id, names.get(vra_id, vra_id),
                                     p["counters"].get("recovery_journal_lost", 0.0), now)
        reasons = [f"the protect VRA {names.get(v, v)} does not answer" for v in silent_protect]
        reasons += [why_recover] if why_recover else []
        reasons += [f"the stream of VRA {names.get(v, v)} to the recovery VRA is {p['state']}"
                    + (f" ({p['error'][:200]})" if p.get("error") else "")
                    for v, p in protect.items() if p["state"] not in STREAMING]
        if not reasons and rpo is not None and rpo > STALLED_AFTER_S and w.durable_s:
            reasons.append(f"no new consistent checkpoint has reached the recovery journal since "
                           f"{clock(w.durable_s)}")
        w.reason = "; ".join(reasons)
        self._substatus(vpg, w, list(protect.values()), recover, listed, bool(reasons), fields)
        if rpo is not None:
            self._buckets += self._recorder.add(vpg.identifier, now, history.Figures(
                rpo_s=rpo, iops=w.rate_figures.get("iops", 0.0),
                throughput_mb=w.rate_figures.get("throughput_mb", 0.0),
                wan_throughput_mb=w.rate_figures.get("wan_throughput_mb", 0.0),
                journal_used_mb=fields.get("journal_used_mb", vpg.journal_used_mb or 0.0),
                history_minutes=fields.get("history_seconds", vpg.history_seconds or 0) / 60))
        return fields

    @staticmethod
    def _rates(w: VpgWatch, protect: dict, silent: list, recover: dict | None, mirror: bool, now: float,
               fields: dict) -> None:
        """Throughput (before and after compression) and IOPS between passes: on the protected site from the
        protect roles' counters (with one silent nothing is known to move: zeros); on the recovery site, for a
        peer's VPG, from what its recovery VRA received (write payload, bytes on the wire, write records)."""
        if mirror:
            counters = recover["counters"] if recover is not None else None
            totals = None if counters is None else (
                counters.get("bytes", 0.0), counters.get("wire_bytes", 0.0),
                max(0.0, counters.get("records", 0.0) - counters.get("checkpoints", 0.0)))
        elif not protect or silent:
            totals = None
        else:
            totals = tuple(sum(p["counters"].get(k, 0.0) for p in protect.values())
                           for k in ("bytes", "wire_bytes_sent", "writes"))
        if totals is None:
            w.rates, w.rate_figures = None, {}
        else:
            if w.rates is not None and now > w.rates[0]:
                dt = now - w.rates[0]
                d = [max(0.0, a - b) for a, b in zip(totals, w.rates[1:], strict=True)]
                w.rate_figures = {"throughput_mb": d[0] / dt / (1 << 20), "wan_throughput_mb": d[1] / dt / (1 << 20),
                                  "iops": d[2] / dt}
            w.rates = (now, *totals)
        fields["throughput_mb"] = w.rate_figures.get("throughput_mb", 0.0)
        fields["iops"] = int(w.rate_figures.get("iops", 0.0))

    def _substatus(self, vpg: m.Vpg, w: VpgWatch, protect: list[dict], recover: dict | None, listed: list | None,
                   disconnected: bool, fields: dict) -> None:
        broken = recover is not None and recover["state"] in JOURNAL_BROKEN_STATES
        restart = False  # the journal is usable again after it was broken: the VPG starts over
        if recover is not None:
            alert = journal_alert(vpg.identifier, vpg.name, recover["state"], recover.get("error", ""))
            if alert is not None:
                self._journals[vpg.identifier] = alert
            elif self._journals.pop(vpg.identifier, None) is not None or self._alert_from_before(vpg):
                restart = (vpg.status, vpg.substatus) == ("Error", "Error")
        mirror = not protect and vpg.protected_site_id != self.zvm.local_site_id()
        healthy = ((mirror or (bool(protect) and all(p["state"] == "ok" for p in protect)))
                   and recover is not None and recover["state"] in JOURNAL_TAKING_STATES)
        # the journal holds a consistent checkpoint now (not only one the database remembers)
        consistent = (any(c.consistent for c in listed or [])
                      or bool(recover and recover["counters"].get("newest_consistent_checkpoint_s")))
        syncing = any(p.get("substatus") for p in protect)
        if vpg.substatus in OPERATION_SUBSTATUSES:
            pass  # a recovery operation owns the status until it ends
        elif broken:
            fields.update(status="Error", substatus="Error")  # replication is refused until a Force Sync
        elif vpg.paused:
            pass  # ReplicationPausedUserInitiated until resumed
        elif any(p.get("needs_bitmap_sync") for p in protect):
            fields["substatus"] = "BitmapSync"
        elif vpg.status == "Initializing" and vpg.substatus in ("InitialSync", "DeltaSync", "BitmapSync"):
            if healthy and consistent:
                fields.update(status="MeetingSLA", substatus="None")
        elif any(p.get("substatus") == "DeltaSync" for p in protect):
            fields["substatus"] = "DeltaSync"  # a forced sync (or a restarted VRA's) runs
        elif vpg.substatus in ("BitmapSync", "DeltaSync") and healthy and not syncing:
            fields["substatus"] = "None"
        elif vpg.status in REPLICATING and vpg.substatus in ("None", DISCONNECTED) and not syncing:
            fields["substatus"] = DISCONNECTED if disconnected else "None"
        if restart:
            fields.update(status="Initializing", substatus="DeltaSync")  # history restarts

    def _list(self, control, vpg: m.Vpg, vra_id: str | None, recover: dict | None, w: VpgWatch,
              now: float) -> list | None:
        """The recovery journal's checkpoints, asked only when its newest changed (or now and then)."""
        vra = self._vras.get(vra_id) if vra_id else None
        if vra is None or control is None:
            return None
        counters = recover["counters"] if recover else {}
        marker = (counters.get("newest_consistent_checkpoint_s"), counters.get("checkpoints_listed"),
                  counters.get("last_seq"))
        if marker[0] is not None and marker == w.listed_marker and now - w.listed_at < LIST_EVERY_S:
            return None
        try:
            listed = control.list_checkpoints(vra_ref(vra), vpg.identifier)
        except ZvmError:
            return None
        w.listed_marker, w.listed_at = marker, now
        return listed

    def recover_report(self, vpg: str, max_age: float = RECOVER_REPORT_MAX_AGE_S) -> dict | None:
        """The peer service's answer for a VPG recovered here, as this monitor's last pass read it from the
        recovery VRA, when that pass was at most ``max_age`` seconds ago (else None: ask the VRA)."""
        seen = self._recover_seen.get(vpg)
        if seen is None or time.monotonic() - seen[0] > max_age:
            return None
        return seen[1]

    def _alert_from_before(self, vpg: m.Vpg) -> bool:
        """A RecoveryJournalCorrupt alert of the VPG raised before this monitor started (looked for once)."""
        if vpg.identifier in self._journals_checked:
            return False
        self._journals_checked.add(vpg.identifier)
        return _journal_alert_active(vpg)

    # --- peers, checkpoints -----------------------------------------------------------------------------

    def _probe_peers(self, now: float) -> None:
        if self.peer_probe is None or now - self._peers_probed_at < PEER_PROBE_EVERY_S:
            return
        self._peers_probed_at = now
        for peer in m.PeerSite.select():
            ok = self.peer_probe(peer)
            with zdb.transaction():
                fields = {"state": "Paired", "last_seen": now} if ok else {"state": "Unreachable"}
                if peer.state != "Unpairing":
                    m.PeerSite.update(**fields).where(m.PeerSite.id == peer.id).execute()

    @staticmethod
    def _store_checkpoints(vpg: m.Vpg, listed: list, now: float) -> None:
        """The checkpoint table of the VPG = the checkpoints its journal holds (inside the transaction).

        The list was read before this transaction (from the VRA, or from the peer's last pass), so a checkpoint
        written since is not in it: a tagged one that the tag task stored on both sites meanwhile must stay.
        What a list leaves out is gone from the journal (promoted past, discarded) only if it is not newer
        than the list: no newer than its newest entry, or, for an empty list, than ``LIST_LAG_S`` ago."""
        known = {c.identifier: c.timestamp
                 for c in m.Checkpoint.select(m.Checkpoint.identifier, m.Checkpoint.timestamp)
                 .where(m.Checkpoint.vpg == vpg)}
        for c in listed:
            if c.checkpoint_id not in known:
                m.Checkpoint.create(identifier=c.checkpoint_id, vpg=vpg, timestamp=c.timestamp_s, tag=c.tag,
                                    consistent=c.consistent)
        horizon = max((c.timestamp_s for c in listed), default=now - LIST_LAG_S)
        in_list = {c.checkpoint_id for c in listed}
        gone = {i for i, ts in known.items() if i not in in_list and ts <= horizon}
        if gone:
            m.Checkpoint.delete().where(m.Checkpoint.vpg == vpg, m.Checkpoint.identifier.in_(sorted(gone))).execute()
        newest = max((c.timestamp_s for c in listed), default=None)
        if newest is not None:
            m.Vpg.update(last_checkpoint_at=newest).where(m.Vpg.id == vpg.id).execute()

    def after_pass(self) -> None:
        self.zvm.db.close()

    def on_stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _durable_in_db(vpg: m.Vpg) -> float | None:
    """The newest consistent checkpoint the database knows (a restarted ZVM starts from it)."""
    got = (m.Checkpoint.select(peewee.fn.MAX(m.Checkpoint.timestamp))
           .where(m.Checkpoint.vpg == vpg.id, m.Checkpoint.consistent == True)  # noqa: E712 - peewee expression
           .scalar())
    return float(got) if got is not None else None


def _journal_alert_active(vpg: m.Vpg) -> bool:
    """A RecoveryJournalCorrupt alert of the VPG is still raised (from before this monitor started)."""
    return m.Alert.select().where(m.Alert.code == "RecoveryJournalCorrupt", m.Alert.entity_id == vpg.identifier,
                                  m.Alert.cleared_at.is_null()).exists()
