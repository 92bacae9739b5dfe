"""The VPGs' monitoring history: samples of RPO, throughput (before and after compression), IOPS, journal use
and journal history, kept at three resolutions in the ``vpg_sample`` table, and the series the statistics API
serves from them.

- The monitor (zvm.monitoring.monitor) hands every pass's figures to a ``Recorder``, which folds them in memory
  into the current 5 s bucket; when a pass falls in a later bucket, the finished one is written (one row) and
  folded into its 1-minute and 15-minute buckets (read, merge, write). So each resolution is exact: a coarse
  bucket's min and max are the min and max of every pass in it, its averages are weighted by passes.
- Retention (``RETENTION``): 5 s buckets for 6 hours, 1-minute for 7 days, 15-minute for 30 days. ``prune``
  deletes older rows and the rows of deleted VPGs; the monitor calls it every few minutes. A VPG's history is
  thus at most 4,320 + 10,080 + 2,880 rows.
- ``series`` answers a range at an interval: from the finest resolution whose retention still covers the
  range's start (the interval is rounded up to a multiple of it), buckets grouped by interval. A bucket
  without a report is absent, never zeros: a monitor that was down leaves a gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from zvm import models as m

RESOLUTIONS = (5, 60, 900)
RETENTION = {5: 6 * 3600, 60: 7 * 86400, 900: 30 * 86400}
NICE_INTERVALS = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)
MAX_POINTS = 720  # the default interval keeps a range's series under this many buckets
FIELDS = ("iops", "throughput_mb", "wan_throughput_mb")  # averaged over passes
LAST = ("journal_used_mb", "history_minutes")  # as last seen in the bucket


@dataclass
class Figures:
    """One pass's figures of a VPG."""

    rpo_s: float
    iops: float = 0.0
    throughput_mb: float = 0.0
    wan_throughput_mb: float = 0.0
    journal_used_mb: float = 0.0
    history_minutes: float = 0.0


@dataclass
class Bucket:
    vpg: str
    resolution: int
    bucket: float
    count: int = 0
    rpo_min: float = math.inf
    rpo_max: float = 0.0
    rpo_sum: float = 0.0
    sums: dict = field(default_factory=lambda: dict.fromkeys(FIELDS, 0.0))
    last: dict = field(default_factory=lambda: dict.fromkeys(LAST, 0.0))

    def add(self, f: Figures) -> None:
        self.count += 1
        self.rpo_min, self.rpo_max = min(self.rpo_min, f.rpo_s), max(self.rpo_max, f.rpo_s)
        self.rpo_sum += f.rpo_s
        for name in FIELDS:
            self.sums[name] += getattr(f, name)
        self.last = {name: getattr(f, name) for name in LAST}

    def merge_into(self, row: m.VpgSample) -> None:
        """Fold this bucket into a stored coarser one (weights: passes)."""
        total = row.count + self.count
        row.rpo_min, row.rpo_max = min(row.rpo_min, self.rpo_min), max(row.rpo_max, self.rpo_max)
        row.rpo_avg = (row.rpo_avg * row.count + self.rpo_sum) / total
        for name in FIELDS:
            setattr(row, name, (getattr(row, name) * row.count + self.sums[name]) / total)
        for name in LAST:
            setattr(row, name, self.last[name])
        row.count = total

    def row(self, resolution: int) -> dict:
        return {"vpg": self.vpg, "resolution": resolution, "bucket": self.bucket - self.bucket % resolution,
                "count": self.count, "rpo_min": self.rpo_min, "rpo_max": self.rpo_max,
                "rpo_avg": self.rpo_sum / self.count, **{n: self.sums[n] / self.count for n in FIELDS}, **self.last}


class Recorder:
    """Folds each pass's figures into the current fine bucket per VPG; ``add`` returns finished buckets, which
    ``store`` writes (call it inside a transaction)."""

    def __init__(self, resolution: int = RESOLUTIONS[0]) -> None:
        self.resolution = resolution
        self._open: dict[str, Bucket] = {}

    def add(self, vpg: str, now: float, figures: Figures) -> list[Bucket]:
        start = now - now % self.resolution
        done = []
        current = self._open.get(vpg)
        if current is not None and current.bucket != start:
            done.append(self._open.pop(vpg))
            current = None
        if current is None:
            current = self._open[vpg] = Bucket(vpg, self.resolution, start)
        current.add(figures)
        return done

    def flush(self) -> list[Bucket]:
        """Every open bucket (a monitor that stops)."""
        done, self._open = list(self._open.values()), {}
        return done


def store(buckets: list[Bucket]) -> None:
    """Write finished fine buckets and fold them into the coarser resolutions (inside a transaction)."""
    for b in buckets:
        if b.count == 0:
            continue
        for resolution in RESOLUTIONS:
            values = b.row(resolution)
            row = m.VpgSample.get_or_none(m.VpgSample.vpg == b.vpg, m.VpgSample.resolution == resolution,
                                          m.VpgSample.bucket == values["bucket"])
            if row is None:
                m.VpgSample.create(**values)
            else:
                b.merge_into(row)
                row.save()


def prune(now: float) -> int:
    """Delete what is past its resolution's retention, and the history of deleted VPGs. Returns rows deleted."""
    deleted = 0
    for resolution, keep in RETENTION.items():
        deleted += m.VpgSample.delete().where(m.VpgSample.resolution == resolution,
                                              m.VpgSample.bucket < now - keep).execute()
    known = m.Vpg.select(m.Vpg.identifier)
    deleted += m.VpgSample.delete().where(m.VpgSample.vpg.not_in(known)).execute()
    return deleted


# --- reading ------------------------------------------------------------------------------------------------

def resolution_for(start: float, now: float, interval: int | None) -> int:
    """The resolution to read: of those whose retention still covers ``start``, the coarsest that divides
    ``interval`` (fewer rows), else the finest (the interval is then rounded up to it)."""
    kept = [r for r in RESOLUTIONS if start >= now - RETENTION[r]] or [RESOLUTIONS[-1]]
    if interval is not None:
        dividing = [r for r in kept if r <= interval and interval % r == 0]
        if dividing:
            return dividing[-1]
    return kept[0]


def default_interval(start: float, end: float, resolution: int) -> int:
    span = max(end - start, 1.0)
    for nice in NICE_INTERVALS:
        if nice >= resolution and span / nice <= MAX_POINTS:
            return nice
    return NICE_INTERVALS[-1]


@dataclass
class Point:
    timestamp: float
    rpo_max: float
    rpo_avg: float
    iops: float
    throughput_mb: float
    wan_throughput_mb: float
    journal_used_mb: float
    history_minutes: float


@dataclass
class Series:
    vpg: str
    start: float
    end: float
    interval: int
    points: list[Point]
    rpo_min: float | None
    rpo_max: float | None
    rpo_avg: float | None


def series(vpgs: list[str], start: float, end: float, interval: int | None, now: float) -> list[Series]:
    """Each VPG's series over [start, end): oldest first, buckets of ``interval`` seconds (rounded up to a
    multiple of the resolution read; None: chosen from the range)."""
    resolution = resolution_for(start, now, interval)
    step = default_interval(start, end, resolution) if interval is None else interval
    step = max(resolution, int(math.ceil(step / resolution)) * resolution)
    rows = (m.VpgSample.select()
            .where(m.VpgSample.vpg.in_(vpgs), m.VpgSample.resolution == resolution,
                   m.VpgSample.bucket >= start - start % resolution, m.VpgSample.bucket < end)
            .order_by(m.VpgSample.vpg, m.VpgSample.bucket)) if vpgs else []
    grouped: dict[str, dict[float, list[m.VpgSample]]] = {v: {} for v in vpgs}
    for row in rows:
        grouped[row.vpg].setdefault(row.bucket - row.bucket % step, []).append(row)
    out = []
    for vpg in vpgs:
        points, every = [], []
        for ts, group in sorted(grouped[vpg].items()):
            count = sum(r.count for r in group)
            every += group
            points.append(Point(
                timestamp=ts, rpo_max=max(r.rpo_max for r in group),
                rpo_avg=sum(r.rpo_avg * r.count for r in group) / count,
                **{n: sum(getattr(r, n) * r.count for r in group) / count for n in FIELDS},
                **{n: getattr(group[-1], n) for n in LAST}))
        total = sum(r.count for r in every)
        out.append(Series(
            vpg=vpg, start=start, end=end, interval=step, points=points,
            rpo_min=min(r.rpo_min for r in every) if every else None,
            rpo_max=max(r.rpo_max for r in every) if every else None,
            rpo_avg=sum(r.rpo_avg * r.count for r in every) / total if every else None))
    return out
