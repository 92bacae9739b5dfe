"""The ZVM's Prometheus metrics (docs/OPERATIONS.md, "Metrics", lists each one).

Two sources, put together in :func:`registry` for each scrape:

- :class:`ZvmCollector` reads the database at scrape time (per VPG: RPO, status, throughput, IOPS, journal;
  per VRA: state and reachability; tasks by type and state; active alerts by type and severity): what the
  REST API shows at that moment, never a copy kept in memory that could go stale or differ between workers.
- ``REQUEST_SECONDS``, the API's request latency histogram, observed by each worker as it answers. Under
  ``zvm serve`` (several gunicorn workers) it is kept in prometheus_client's multiprocess mode: each worker
  writes its figures to files in ``DATA_DIR/metrics/`` (zvm/metrics_dir.py, set up before the workers
  start) and a scrape adds them up, so any worker answers for all.

Nothing here knows Flask: zvm/api/metrics.py serves it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from peewee import fn
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from zvm import db as zdb
from zvm import models as m
from zvm.metrics_dir import MULTIPROC_ENV

VPG_STATUSES = ("Initializing", "MeetingSLA", "NotMeetingSLA", "RpoNotMeetingSLA", "HistoryNotMeetingSLA",
                "FailingOver", "Moving", "Deleting", "Recovered", "Paused", "Error")
VRA_STATES = ("Installing", "Installed", "Uninstalling", "Error")
# API calls take from about a millisecond (a cached list) to tens of seconds (a login under throttling)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "zvm_api_request_duration_seconds", "Time the REST API took to answer, by method, route template and status",
    ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=None)


def worker_exited(pid: int) -> None:
    """Tell the multiprocess files that a worker ended (its live gauges no longer count)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(method, route, str(status)).observe(seconds)


def registry(db_of: Callable[[], object]) -> CollectorRegistry:
    """What one scrape reads: the database collector and the latency histogram (of every worker)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ZvmCollector(db_of))
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(reg)
    else:
        reg.register(REQUEST_SECONDS)
    return reg


class ZvmCollector(Collector):
    """Reads the ZVM's database at each scrape. ``db_of()`` returns the peewee database to connect."""

    def __init__(self, db_of: Callable[[], object]):
        self.db_of = db_of

    def describe(self) -> list:
        return []  # the families are only known by reading the database

    def collect(self) -> Iterator[Metric]:
        db = self.db_of()
        opened_here = db.is_closed()  # the listener's threads: the API's requests have theirs open already
        zdb.connect(db)
        try:
            yield from self._vpgs()
            yield from self._vras()
            yield from self._tasks()
            yield from self._alerts()
        finally:
            if opened_here:
                db.close()

    def _vpgs(self) -> Iterator[Metric]:
        labels = ["vpg", "vpg_name", "protected_site", "recovery_site"]
        fams = {
            "rpo": GaugeMetricFamily("zvm_vpg_rpo_seconds", "The VPG's actual RPO (absent while unknown)", labels=labels),
            "rpo_threshold": GaugeMetricFamily("zvm_vpg_rpo_threshold_seconds", "The VPG's configured RPO alert",
                                               labels=labels),
            "throughput": GaugeMetricFamily("zvm_vpg_throughput_bytes_per_second",
                                            "Bytes per second the VMs of the VPG write (as the protect VRAs report)",
                                            labels=labels),
            "iops": GaugeMetricFamily("zvm_vpg_iops", "Writes per second of the VMs of the VPG", labels=labels),
            "journal": GaugeMetricFamily("zvm_vpg_journal_used_bytes", "Size of the VPG's recovery journal",
                                         labels=labels),
            "history": GaugeMetricFamily("zvm_vpg_journal_history_seconds",
                                         "Time span the VPG's journal covers (points in time to recover to)",
                                         labels=labels),
            "history_configured": GaugeMetricFamily("zvm_vpg_journal_history_configured_seconds",
                                                    "Journal history the VPG is configured to keep", labels=labels),
            "paused": GaugeMetricFamily("zvm_vpg_paused", "1 while the VPG's replication is paused by a user",
                                        labels=labels),
            "substatus": GaugeMetricFamily("zvm_vpg_substatus", "1 for the VPG's current substatus",
                                           labels=[*labels, "substatus"]),
        }
        status = StateSetMetricFamily("zvm_vpg_status", "The VPG's status (one series per status: 1 for the "
                                                        "current one)", labels=labels)
        sites = {s.id: s.name for s in m.Site.select(m.Site.id, m.Site.name)}
        for v in m.Vpg.select():
            values = [v.identifier, v.name, sites.get(v.protected_site_id, ""), sites.get(v.recovery_site_id, "")]
            if v.actual_rpo_seconds is not None:
                fams["rpo"].add_metric(values, v.actual_rpo_seconds)
            fams["rpo_threshold"].add_metric(values, v.rpo_threshold_seconds)
            fams["throughput"].add_metric(values, float(v.throughput_mb or 0.0) * (1 << 20))
            fams["iops"].add_metric(values, v.iops or 0)
            fams["journal"].add_metric(values, float(v.journal_used_mb or 0.0) * (1 << 20))
            fams["history"].add_metric(values, v.history_seconds or 0)
            fams["history_configured"].add_metric(values, v.journal_history_hours * 3600)
            fams["paused"].add_metric(values, 1 if v.paused else 0)
            fams["substatus"].add_metric([*values, v.substatus], 1)
            states = dict.fromkeys(VPG_STATUSES, False)
            states[v.status] = True  # a status this list lacks still shows
            status.add_metric(values, states)
        yield from fams.values()
        yield status

    def _vras(self) -> Iterator[Metric]:
        labels = ["vra", "vra_name", "host", "site"]
        state = StateSetMetricFamily("zvm_vra_state", "The VRA's state (one series per state: 1 for the current "
                                                      "one)", labels=labels)
        reachable = GaugeMetricFamily("zvm_vra_reachable", "1 when the VRA answered the ZVM's last status call",
                                      labels=labels)
        seen = GaugeMetricFamily("zvm_vra_last_seen_timestamp_seconds", "When the VRA last answered (Unix time)",
                                 labels=labels)
        sites = {s.id: s.name for s in m.Site.select(m.Site.id, m.Site.name)}
        for v in m.Vra.select():
            values = [v.identifier, v.name, v.host_name, sites.get(v.site_id, "")]
            states = dict.fromkeys(VRA_STATES, False)
            states[v.state] = True
            state.add_metric(values, states)
            reachable.add_metric(values, 1 if v.reachable else 0)
            if v.last_seen is not None:
                seen.add_metric(values, v.last_seen)
        yield from (state, reachable, seen)

    def _tasks(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily("zvm_tasks", "Tasks the ZVM keeps, by type and state", labels=["type", "state"])
        number = fn.COUNT(m.Task.id)
        for kind, state, count in (m.Task.select(m.Task.kind, m.Task.state, number).group_by(m.Task.kind, m.Task.state)
                                   .tuples()):
            fam.add_metric([kind, state], count)
        yield fam

    def _alerts(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily("zvm_alerts_active", "Active alerts (raised, not cleared), by type and severity",
                                labels=["type", "severity", "dismissed"])
        number = fn.COUNT(m.Alert.id)
        q = (m.Alert.select(m.Alert.code, m.Alert.level, m.Alert.dismissed, number).where(m.Alert.cleared_at.is_null())
             .group_by(m.Alert.code, m.Alert.level, m.Alert.dismissed).tuples())
        for code, level, dismissed, count in q:
            fam.add_metric([code, level, "true" if dismissed else "false"], count)
        yield fam
