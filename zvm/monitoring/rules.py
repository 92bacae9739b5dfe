"""What deserves an alert, and what a VPG's status is, from its figures. Pure: no database, no I/O.

Alerts (code, level):
    VpgRpoOverThreshold     Warning   actual RPO above the VPG's RPO alert threshold (Error above twice it)
    VpgHistoryBelow85       Warning   journal history covers less than 85 % of the configured history
    VpgHistoryBelow75       Error     ... less than 75 %
    VpgJournalNearLimit     Warning   journal use at or above its warning threshold, or 90 % of its hard limit
    VpgJournalAtLimit       Error     journal use at its hard limit: history is shrinking
    RecoveryJournalCorrupt  Error     the recovery journal failed verification (or its writes failed): replication
                                      is refused until a Force Sync discards it
    VraUnreachable          Error     an installed VRA has not answered for longer than the grace time
    PeerSiteUnreachable     Error     the paired site's ZVM has not answered for longer than the grace time

A VPG's history is only judged once it has existed as long as its configured history (a new VPG cannot
cover 24 hours yet), and only while it replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLICATING = {"MeetingSLA", "NotMeetingSLA", "RpoNotMeetingSLA", "HistoryNotMeetingSLA"}
UNREACHABLE_GRACE_S = 60.0


@dataclass(frozen=True)
class AlertSpec:
    code: str
    level: str  # Warning, Error
    entity: str  # Vpg, Vra, Site
    entity_id: str
    description: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.code, self.entity, self.entity_id


@dataclass(frozen=True)
class VpgFigures:
    identifier: str
    name: str
    status: str
    paused: bool
    rpo_threshold_s: int
    actual_rpo_s: int | None
    history_configured_s: int
    history_actual_s: int
    journal_used_mb: float
    journal_warning_mb: int
    journal_hard_limit_mb: int
    age_s: float  # since the VPG started replicating (or was created)
    rpo_reason: str = ""  # why the RPO grows, when monitoring can tell (a VRA silent, the stream down...)


def vpg_alerts(v: VpgFigures) -> list[AlertSpec]:
    """A paused VPG is judged too: its RPO grows while it is paused, and that is what its SLA is about."""
    if v.status not in REPLICATING:
        return []
    out = []
    if v.actual_rpo_s is not None and v.actual_rpo_s > v.rpo_threshold_s:
        level = "Error" if v.actual_rpo_s > 2 * v.rpo_threshold_s else "Warning"
        out.append(AlertSpec("VpgRpoOverThreshold", level, "Vpg", v.identifier,
                             f"VPG {v.name}: RPO is {v.actual_rpo_s} s, over its {v.rpo_threshold_s} s threshold"
                             + (f": {v.rpo_reason}" if v.rpo_reason else "")
                             + (" (replication is paused)" if v.paused else "")))
    if v.history_configured_s > 0 and v.age_s >= v.history_configured_s:
        share = v.history_actual_s / v.history_configured_s
        if share < 0.75:
            out.append(AlertSpec("VpgHistoryBelow75", "Error", "Vpg", v.identifier,
                                 f"VPG {v.name}: the journal covers {share:.0%} of the configured history "
                                 f"({v.history_actual_s // 60} of {v.history_configured_s // 60} min): raise its "
                                 "hard limit or shorten the history"))
        elif share < 0.85:
            out.append(AlertSpec("VpgHistoryBelow85", "Warning", "Vpg", v.identifier,
                                 f"VPG {v.name}: the journal covers {share:.0%} of the configured history "
                                 f"({v.history_actual_s // 60} of {v.history_configured_s // 60} min)"))
    hard, warn, used = v.journal_hard_limit_mb, v.journal_warning_mb, v.journal_used_mb
    if hard and used >= hard:
        out.append(AlertSpec("VpgJournalAtLimit", "Error", "Vpg", v.identifier,
                             f"VPG {v.name}: the journal is at its {hard} MB hard limit; history shrinks: raise "
                             "the limit"))
    elif (warn and used >= warn) or (hard and used >= 0.9 * hard):
        out.append(AlertSpec("VpgJournalNearLimit", "Warning", "Vpg", v.identifier,
                             f"VPG {v.name}: the journal uses {used:.0f} MB, near its limit "
                             f"({'warning ' + str(warn) + ' MB, ' if warn else ''}hard limit {hard or 'none'} MB)"))
    return out


def vpg_status(v: VpgFigures) -> str:
    """MeetingSLA unless the RPO or the history (as judged above) misses its target."""
    if v.status not in REPLICATING:
        return v.status
    codes = {a.code for a in vpg_alerts(v)}
    rpo = "VpgRpoOverThreshold" in codes
    history = bool(codes & {"VpgHistoryBelow85", "VpgHistoryBelow75"})
    if rpo and history:
        return "NotMeetingSLA"
    if rpo:
        return "RpoNotMeetingSLA"
    if history:
        return "HistoryNotMeetingSLA"
    return "MeetingSLA"


JOURNAL_BROKEN_STATES = ("journal-corrupt", "journal-error")
# The recover role's states in which its journal takes the stream's writes: past the warning threshold, or
# with less history than configured (the hard limit promoted early) are warnings of their own (the journal and
# history alerts); a full journal pushes the protect side back, a failed promotion is not yet understood.
JOURNAL_TAKING_STATES = ("ok", "journal-warning", "journal-history_shrunk")


def journal_alert(identifier: str, name: str, state: str, error: str) -> AlertSpec | None:
    """The alert for a recover role in ``state`` (None when the journal can be used)."""
    if state not in JOURNAL_BROKEN_STATES:
        return None
    what = "is corrupt" if state == "journal-corrupt" else "stopped taking writes"
    return AlertSpec("RecoveryJournalCorrupt", "Error", "Vpg", identifier,
                     f"VPG {name}: the recovery journal {what} ({error[:300]}); replication is refused. Force Sync "
                     "the VPG: the journal is discarded, history restarts, a delta sync follows")


def unreachable_alert(entity: str, entity_id: str, name: str, last_seen: float | None, since: float,
                      now: float, grace: float = UNREACHABLE_GRACE_S) -> AlertSpec | None:
    """``last_seen``: its last answer (None: never); ``since``: when it should have started answering."""
    reference = last_seen if last_seen is not None else since
    if now - reference <= grace:
        return None
    code = "VraUnreachable" if entity == "Vra" else "PeerSiteUnreachable"
    when = f"for {int(now - reference)} s" if last_seen is not None else "since it was set up"
    what = "VRA" if entity == "Vra" else "the ZVM of paired site"
    return AlertSpec(code, "Error", entity, entity_id, f"{what} {name} has not answered {when}: check that it "
                     "runs and that the network between the sites is up")
