"""The VPGs' monitoring history (zvm.monitoring.history) over a time range: RPO, throughput before and after
compression, IOPS, journal use and history, in buckets of an interval; for one VPG or for all of them (the
dashboard's one call).

Dates: ``2026-12-05`` (midnight UTC), ``2026-12-05T06:49Z``, or a full ISO 8601 date-time with an offset; a date
without an offset is UTC. Defaults: the last hour, an interval chosen from the range (at most 720 buckets).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from zvm import models as m
from zvm.api import schemas
from zvm.api.spec import ApiBlueprint, Param
from zvm.api.vpgs import get_vpg
from zvm.errors import ValidationError
from zvm.monitoring.history import Series, series

bp = ApiBlueprint("statistics", __name__, tag="Statistics",
                  description="Monitoring history of VPGs: RPO, throughput, IOPS, journal.")

DEFAULT_RANGE_S = 3600
MAX_INTERVAL_S = 30 * 86400

QUERY = [
    Param("startDate", schemas.string(maxLength=64), "From (ISO 8601; default: endDate minus one hour)."),
    Param("endDate", schemas.string(maxLength=64), "To (ISO 8601; default: now)."),
    Param("interval", schemas.integer(minimum=1, maximum=MAX_INTERVAL_S),
          "Seconds per bucket, rounded up to the stored resolution (default: chosen from the range)."),
]

_NUMBER = schemas.number()
STATISTICS = schemas.obj({
    "VpgIdentifier": schemas.string(),
    "StartDate": schemas.date_time(),
    "EndDate": schemas.date_time(),
    "IntervalInSeconds": schemas.integer(),
    "Rpo": schemas.obj({"Min": schemas.number(nullable=True), "Max": schemas.number(nullable=True),
                        "Average": schemas.number(nullable=True)}),
    "Samples": {"type": "array", "items": schemas.obj({
        "TimeStamp": schemas.date_time("The bucket's start."),
        "ActualRPO": schemas.integer("Seconds: the worst RPO in the bucket."),
        "AverageRPO": _NUMBER,
        "IOPs": schemas.integer(),
        "ThroughputInMB": schemas.number("MB/s the VMs wrote (before compression)."),
        "WanThroughputInMB": schemas.number("MB/s sent to the recovery site (after compression)."),
        "JournalUsedStorageInMB": _NUMBER,
        "ActualHistoryInMinutes": schemas.integer(),
    })},
})


def parse_date(text: str, name: str) -> float:
    """``2026-12-05``, ``2026-12-05T06:49Z``, a full ISO date-time (offset or not: none is UTC) -> epoch s."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValidationError(f"query parameter {name}: {text!r} is not a date: use e.g. 2026-12-05, "
                              "2026-12-05T06:49Z or 2026-12-05T06:49:00+02:00", field=name) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _range(query: dict) -> tuple[float, float, int | None, float]:
    now = time.time()
    end = parse_date(query["endDate"], "endDate") if "endDate" in query else now
    start = parse_date(query["startDate"], "startDate") if "startDate" in query else end - DEFAULT_RANGE_S
    if start >= end:
        raise ValidationError(f"query parameter startDate ({iso(start)}) must be before endDate ({iso(end)})",
                              field="startDate")
    return start, end, query.get("interval"), now


def render(s: Series) -> dict:
    def rounded(v: float | None, digits: int = 2) -> float | None:
        return None if v is None else round(v, digits)

    return {
        "VpgIdentifier": s.vpg, "StartDate": iso(s.start), "EndDate": iso(s.end), "IntervalInSeconds": s.interval,
        "Rpo": {"Min": rounded(s.rpo_min), "Max": rounded(s.rpo_max), "Average": rounded(s.rpo_avg)},
        "Samples": [{
            "TimeStamp": iso(p.timestamp), "ActualRPO": int(round(p.rpo_max)), "AverageRPO": round(p.rpo_avg, 2),
            "IOPs": int(round(p.iops)), "ThroughputInMB": round(p.throughput_mb, 3),
            "WanThroughputInMB": round(p.wan_throughput_mb, 3),
            "JournalUsedStorageInMB": round(p.journal_used_mb, 2),
            "ActualHistoryInMinutes": int(p.history_minutes),
        } for p in s.points],
    }


@bp.operation("GET", "/vpgs/{vpgIdentifier}/statistics", summary="A VPG's monitoring history", query=QUERY,
              response=STATISTICS)
def vpg_statistics(vpgIdentifier, query):
    vpg = get_vpg(vpgIdentifier)
    start, end, interval, now = _range(query)
    return render(series([vpg.identifier], start, end, interval, now)[0])


@bp.operation("GET", "/statistics/vpgs", summary="Every VPG's monitoring history", query=QUERY,
              response={"type": "array", "items": STATISTICS})
def all_vpg_statistics(query):
    start, end, interval, now = _range(query)
    vpgs = [v.identifier for v in m.Vpg.select(m.Vpg.identifier).order_by(m.Vpg.name)]
    return [render(s) for s in series(vpgs, start, end, interval, now)]
