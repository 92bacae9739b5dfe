"""The VRA's Prometheus metrics, served by ``vra serve --metrics-listen HOST:PORT`` (docs/OPERATIONS.md,
"Metrics", lists each one).

Read at scrape time from what the Control service's ``Status`` call reports (the protect and recover
roles' status and counters, the VPG coordinators' checkpoint counts, the syncs) and from each IO filter
this VRA's protect roles use (its control socket's ``counters``): the same figures the ZVM sees, never a
copy that could go stale. One exception: the totals of finished syncs by kind, which the VRA keeps only
as its last reports; this collector adds each report it has not seen yet to its totals (since this VRA
started; a report that came and went between two scrapes of a busy VRA is not counted).

The listener has no authentication: it listens on loopback unless the operator gives another address (a
monitoring network). It never stops replication: an address that cannot be bound is logged and the VRA
goes on without metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from vra_appliance.iofilter.control import FilterControl

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:9465"

# protect role counters -> (metric, type, help)
PROTECT = {
    "writes": ("zvr_vra_protect_writes", "counter", "Writes the IO filters split to this VRA for the VPG"),
    "bytes": ("zvr_vra_protect_write_bytes", "counter", "Bytes of those writes"),
    "batches": ("zvr_vra_stream_batches_sent", "counter", "Batches of writes sent to the recovery VRA"),
    "resent_batches": ("zvr_vra_stream_batches_resent", "counter", "Batches sent again after a reconnect"),
    "raw_bytes_sent": ("zvr_vra_stream_raw_bytes_sent", "counter", "Bytes sent before compression"),
    "wire_bytes_sent": ("zvr_vra_stream_wire_bytes_sent", "counter", "Bytes sent after compression"),
    "compression_ratio": ("zvr_vra_stream_compression_ratio", "gauge", "Raw bytes sent / wire bytes sent"),
    "next_seq": ("zvr_vra_stream_sent_seq", "gauge", "Sequence number of the next record to send"),
    "acked_seq": ("zvr_vra_stream_acked_seq", "gauge", "Newest record the recovery VRA acknowledged durable"),
    "unacked_batches": ("zvr_vra_stream_unacked_batches", "gauge", "Batches sent and not yet acknowledged"),
    "buffered_bytes": ("zvr_vra_stream_buffered_bytes", "gauge", "Bytes held in memory, not yet acknowledged"),
    "rpo_ms": ("zvr_vra_protect_rpo_seconds", "gauge", "Age of the oldest write not yet durable on the recovery "
                                                      "side (this VRA's part of the VPG)"),
    "dropped_writes": ("zvr_vra_protect_dropped_writes", "counter", "Writes let go for lack of buffer (their "
                                                                    "extents go to the bitmap sync)"),
    "dirty_bytes": ("zvr_vra_protect_dirty_bytes", "gauge", "Bytes the next bitmap sync must resend"),
    "resync_bytes": ("zvr_vra_protect_resync_bytes", "counter", "Bytes resent by bitmap and delta syncs"),
    "reconnects": ("zvr_vra_stream_reconnects", "counter", "Reconnections of the stream to the recovery VRA"),
    "checkpoints_taken": ("zvr_vra_checkpoints_taken", "counter", "Checkpoints this VRA coordinated for the VPG"),
    "checkpoints_failed": ("zvr_vra_checkpoints_failed", "counter", "Checkpoints it coordinated that failed"),
}
RECOVER = {
    "journal_bytes": ("zvr_vra_journal_bytes", "gauge", "Size of the VPG's recovery journal"),
    "last_seq": ("zvr_vra_journal_records", "gauge", "Sequence number of the newest record in the journal"),
    "promoted_seq": ("zvr_vra_journal_promoted_seq", "gauge", "Newest record written into the replica volumes"),
    "history_covered_s": ("zvr_vra_journal_history_seconds", "gauge", "Time span the journal covers"),
    "checkpoints_listed": ("zvr_vra_journal_checkpoints", "gauge", "Checkpoints in the journal"),
    "open_images": ("zvr_vra_journal_open_images", "gauge", "Point-in-time images open on the journal"),
}
FILTER = {  # IO filter counters (its control socket) -> (metric, type, help)
    "writes": ("zvr_vra_filter_writes", "counter", "Writes the filter completed"),
    "bytes_written": ("zvr_vra_filter_write_bytes", "counter", "Bytes the filter wrote"),
    "errors": ("zvr_vra_filter_errors", "counter", "NBD requests the filter failed"),
    "dirty_bytes": ("zvr_vra_filter_dirty_bytes", "gauge", "Bytes in the filter's dirty map (not yet known "
                                                           "to be replicated)"),
    "dirty_extents": ("zvr_vra_filter_dirty_extents", "gauge", "Extents in the filter's dirty map"),
    "queue_bytes": ("zvr_vra_filter_ring_bytes", "gauge", "Bytes of writes in the filter's ring to the VRA"),
    "queue_frames": ("zvr_vra_filter_ring_frames", "gauge", "Writes in the filter's ring to the VRA"),
    "queue_budget": ("zvr_vra_filter_ring_budget_bytes", "gauge", "The ring's capacity"),
}


def _family(name: str, kind: str, doc: str, labels: list[str]) -> Metric:
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


class VraCollector(Collector):
    """``protect`` / ``recover``: the daemon's ProtectSide and RecoverySide; ``coordinators()``: VPG ->
    coordinator (its ``taken`` / ``failed``); ``filter_controls()``: the control sockets of the IO filters
    this VRA's protect roles use."""

    def __init__(self, vra_id: str, protect, recover, coordinators: Callable[[], dict],
                 filter_controls: Callable[[], list[str]]):
        self.vra_id = vra_id
        self.protect, self.recover = protect, recover
        self.coordinators, self.filter_controls = coordinators, filter_controls
        self._lock = threading.Lock()
        self._syncs_seen: set[tuple] = set()
        self._sync_totals: dict[tuple[str, str, str], list[float]] = {}  # (vpg, kind, result) -> [runs, bytes]

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Metric]:
        role = GaugeMetricFamily("zvr_vra_role_state", "1 for each role this VRA has, with its state",
                                 labels=["vpg", "role", "state"])
        sync_running = GaugeMetricFamily("zvr_vra_sync_running", "1 while a sync of the kind runs for the VPG",
                                         labels=["vpg", "kind"])
        fams: dict[str, Metric] = {}

        def add(table: dict, key: str, labels: list[str], values: list[str], value: float) -> None:
            name, kind, doc = table[key]
            fam = fams.setdefault(name, _family(name, kind, doc, labels))
            fam.add_metric(values, value)

        coordinators = self.coordinators()
        for st in self.protect.status():
            vpg = st["vpg"]
            role.add_metric([vpg, "protect", st["state"]], 1)
            counters = dict(st.get("counters", {}))
            coord = coordinators.get(vpg)
            if coord is not None:
                counters["checkpoints_taken"], counters["checkpoints_failed"] = coord.taken, coord.failed
            if "rpo_ms" in counters:
                counters["rpo_ms"] = counters["rpo_ms"] / 1000.0
            for key, value in counters.items():
                if key in PROTECT and isinstance(value, int | float):
                    add(PROTECT, key, ["vpg"], [vpg], float(value))
            sync = st.get("sync")
            if sync is not None:
                if sync.get("current"):
                    sync_running.add_metric([vpg, sync["current"].get("kind", "")], 1)
                self._count_syncs(vpg, sync.get("reports") or [])
        for st in self.recover.status():
            vpg = st["vpg"]
            role.add_metric([vpg, "recover", st["state"]], 1)
            for key, value in st.get("counters", {}).items():
                if key in RECOVER and isinstance(value, int | float):
                    add(RECOVER, key, ["vpg"], [vpg], float(value))
        yield role
        yield sync_running
        yield from fams.values()
        yield from self._syncs()
        yield from self._filters()

    def _count_syncs(self, vpg: str, reports: list[dict]) -> None:
        with self._lock:
            for r in reports:
                if not r.get("finished_ns"):
                    continue
                key = (vpg, r.get("volume"), r.get("kind"), r.get("started_ns"))
                if key in self._syncs_seen:
                    continue
                self._syncs_seen.add(key)
                result = "completed" if r.get("completed") else "failed"
                totals = self._sync_totals.setdefault((vpg, r.get("kind", ""), result), [0.0, 0.0])
                totals[0] += 1
                totals[1] += float(r.get("wire_bytes") or 0)
            if len(self._syncs_seen) > 10000:  # only reports still listed can come again
                listed = {(vpg, r.get("volume"), r.get("kind"), r.get("started_ns")) for r in reports}
                self._syncs_seen = {k for k in self._syncs_seen if k[0] != vpg or k in listed}

    def _syncs(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("zvr_vra_syncs", "Syncs that ended, by VPG, kind (InitialSync, BitmapSync, "
                                                    "DeltaSync) and result", labels=["vpg", "kind", "result"])
        sent = CounterMetricFamily("zvr_vra_sync_wire_bytes", "Bytes those syncs sent",
                                   labels=["vpg", "kind", "result"])
        with self._lock:
            for (vpg, kind, result), (n, nbytes) in sorted(self._sync_totals.items()):
                runs.add_metric([vpg, kind, result], n)
                sent.add_metric([vpg, kind, result], nbytes)
        yield from (runs, sent)

    def _filters(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("zvr_vra_filter_up", "1 when the IO filter answered on its control socket",
                               labels=["control"])
        connected = GaugeMetricFamily("zvr_vra_filter_connected", "1 when the filter's stream to this VRA is "
                                                                  "connected", labels=["filter"])
        frozen = GaugeMetricFamily("zvr_vra_filter_freeze_gate_closed", "1 while the filter holds writes for a "
                                                                        "checkpoint", labels=["filter"])
        held = GaugeMetricFamily("zvr_vra_filter_held_writes", "Writes the filter's freeze gate holds",
                                 labels=["filter"])
        freezes = CounterMetricFamily("zvr_vra_filter_freezes", "Freezes (checkpoints) the filter took part in",
                                      labels=["filter"])
        fams: dict[str, Metric] = {}
        for control in sorted(set(self.filter_controls())):
            try:
                with FilterControl(control, timeout_s=2.0) as ctl:
                    c = ctl.counters()
            except (OSError, ValueError):
                up.add_metric([control], 0)
                continue
            up.add_metric([control], 1)
            fid = str(c.get("filter_id", control))
            connected.add_metric([fid], 1 if c.get("vra") == "connected" else 0)
            cp = c.get("checkpoints") or {}
            frozen.add_metric([fid], 1 if cp.get("frozen") else 0)
            freezes.add_metric([fid], float(cp.get("freezes", 0)))
            held.add_metric([fid], float(sum(int(v.get("held_writes") or 0) for v in (c.get("volumes") or {}).values())))
            for key, (name, kind, doc) in FILTER.items():
                if isinstance(c.get(key), int | float) and not isinstance(c.get(key), bool):
                    fams.setdefault(name, _family(name, kind, doc, ["filter"])).add_metric([fid], float(c[key]))
        yield from (up, connected, frozen, held, freezes)
        yield from fams.values()


class MetricsServer:
    """The VRA's /metrics listener (``start()`` / ``stop()``)."""

    def __init__(self, address: str, collector: VraCollector):
        self.host, _, port = address.rpartition(":")
        if not self.host or not port.isdigit():
            raise ValueError(f"--metrics-listen {address!r}: give HOST:PORT (e.g. {DEFAULT_LISTEN}), or 'off'")
        self.port = int(port)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.server = None

    def start(self) -> bool:
        try:
            self.server, _ = start_http_server(self.port, addr=self.host.strip("[]"), registry=self.registry)
        except OSError as exc:
            log.warning("metrics not served: cannot listen on %s:%d (%s); replication goes on without them",
                        self.host, self.port, exc)
            return False
        self.port = self.server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
