"""The statistics API over the monitoring history: buckets folded exactly across resolutions, gaps left
absent, the range and interval parsed (bad values name the field), one VPG or all of them; pruning keeps the
history bounded. Both database engines."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.zvm.test_api import create_vpg
from zvm import db as zdb
from zvm import models as m
from zvm.monitoring import history
from zvm.monitoring.history import Figures, Recorder


@pytest.fixture
def app(app_on_both_engines):
    return app_on_both_engines


def feed(vid: str, start: float, seconds: int, rpo=lambda t: t % 7, step: float = 1.0) -> None:
    """One pass per ``step`` seconds from ``start``, as the monitor would, then the open bucket stored."""
    rec = Recorder()
    done = []
    t = start
    while t < start + seconds:
        done += rec.add(vid, t, Figures(rpo_s=rpo(t), iops=100.0, throughput_mb=2.0, wan_throughput_mb=0.5,
                                        journal_used_mb=t - start, history_minutes=3.0))
        t += step
    with zdb.transaction():
        history.store(done + rec.flush())


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_vpgs_statistics_are_its_passes_folded_into_buckets(api):
    vid = create_vpg(api, "web", ["vm-0"])
    now = time.time()
    t0 = now - now % 900 - 1800  # two 15-minute buckets ago, aligned
    feed(vid, t0, 120)  # two minutes of passes, one a second, RPO 0..6 s
    feed(vid, t0 + 300, 60, rpo=lambda t: 40.0)  # a minute at 40 s, after a three-minute gap

    got = api.get(f"/vpgs/{vid}/statistics", query_string={
        "startDate": iso(t0), "endDate": iso(t0 + 600), "interval": 60}).json
    assert got["VpgIdentifier"] == vid and got["IntervalInSeconds"] == 60
    assert (got["StartDate"], got["EndDate"]) == (iso(t0), iso(t0 + 600))
    samples = got["Samples"]
    # the gap is absent, not zeros; oldest first
    assert [s["TimeStamp"] for s in samples] == [iso(t0), iso(t0 + 60), iso(t0 + 300)]
    assert [s["ActualRPO"] for s in samples] == [6, 6, 40]
    assert samples[2]["AverageRPO"] == 40.0
    assert all(s["IOPs"] == 100 and s["ThroughputInMB"] == 2.0 and s["WanThroughputInMB"] == 0.5 for s in samples)
    assert samples[0]["JournalUsedStorageInMB"] == 59.0 and samples[0]["ActualHistoryInMinutes"] == 3
    assert got["Rpo"]["Min"] == 0.0 and got["Rpo"]["Max"] == 40.0

    # 5 s buckets for the same minute: 12 of them, each the max of its passes
    fine = api.get(f"/vpgs/{vid}/statistics", query_string={
        "startDate": iso(t0), "endDate": iso(t0 + 60), "interval": 5}).json["Samples"]
    assert len(fine) == 12 and max(s["ActualRPO"] for s in fine) == 6

    # the 15-minute resolution folds the same passes: same max, same weighted average
    coarse = api.get(f"/vpgs/{vid}/statistics", query_string={
        "startDate": iso(t0), "endDate": iso(t0 + 900), "interval": 900}).json
    assert len(coarse["Samples"]) == 1 and coarse["Samples"][0]["ActualRPO"] == 40
    expected = (sum((t0 + i) % 7 for i in range(120)) + 40 * 60) / 180
    assert coarse["Samples"][0]["AverageRPO"] == pytest.approx(expected, abs=0.01)
    assert coarse["Rpo"]["Average"] == pytest.approx(expected, abs=0.01)


def test_all_vpgs_in_one_call_and_defaults(api):
    a = create_vpg(api, "a", ["vm-0"])
    b = create_vpg(api, "b", ["vm-1"])
    feed(a, time.time() - 30, 20)
    got = api.get("/statistics/vpgs").json
    assert [s["VpgIdentifier"] for s in got] == [a, b]
    assert got[0]["Samples"] and got[1]["Samples"] == [] and got[1]["Rpo"]["Max"] is None
    assert got[0]["IntervalInSeconds"] == 5  # the last hour at the finest resolution, 720 buckets at most
    day = api.get("/statistics/vpgs", query_string={"startDate": iso(time.time() - 86400)}).json
    assert day[0]["IntervalInSeconds"] >= 120  # under 720 buckets per day


@pytest.mark.parametrize("text", ["2026-12-05", "2026-12-05T06:49Z", "2026-12-05T08:49:00+02:00",
                                  "2026-12-05T06:49:00.5Z"])
def test_date_forms(api, text):
    vid = create_vpg(api, "web", ["vm-0"])
    got = api.get(f"/vpgs/{vid}/statistics", query_string={"startDate": text, "endDate": "2026-12-06"})
    assert got.status == 200, got.json
    assert got.json["StartDate"].startswith("2026-12-05T")


@pytest.mark.parametrize("query,field", [
    ({"startDate": "yesterday"}, "startDate"), ({"endDate": "2026-13-01"}, "endDate"),
    ({"interval": "0"}, "interval"), ({"interval": "ten"}, "interval"),
    ({"startDate": "2026-12-06", "endDate": "2026-12-05"}, "startDate"), ({"from": "2026-12-05"}, "from"),
])
def test_bad_values_are_refused_naming_the_field(api, query, field):
    vid = create_vpg(api, "web", ["vm-0"])
    got = api.get(f"/vpgs/{vid}/statistics", query_string=query)
    assert got.status == 400 and field in got.json["Message"], got.json
    assert api.get("/statistics/vpgs", query_string=query).status == 400
    assert api.get("/vpgs/nope/statistics").status == 404


def test_prune_keeps_each_resolution_to_its_retention_and_drops_deleted_vpgs(api):
    vid = create_vpg(api, "web", ["vm-0"])
    now = time.time()
    with zdb.transaction():
        for resolution, keep in history.RETENTION.items():
            m.VpgSample.create(vpg=vid, resolution=resolution, bucket=now - keep - resolution)
            m.VpgSample.create(vpg=vid, resolution=resolution, bucket=now - resolution)
        m.VpgSample.create(vpg="deleted-vpg", resolution=5, bucket=now - 5)
        assert history.prune(now) == 4
    assert sorted(s.resolution for s in m.VpgSample.select()) == [5, 60, 900]
