"""The dashboard's and a VPG page's charts in Debian's chromium, against the two-site lab: their data is the
statistics API's (GET /v1/statistics/vpgs, GET /v1/vpgs/{id}/statistics) over the last hour in one-minute
buckets, every VPG's samples combined on the dashboard (the worst RPO), and a bucket without data is a gap
(null), not a zero. The test reads the very answers the page received and checks what the charts show."""

from __future__ import annotations

import re
from datetime import datetime

from playwright.sync_api import expect

from tests.plugin.conftest import login

INTERVAL = 60
SOME = re.compile(r"^[1-9]\d*$")


def _buckets(answers: list, start: int) -> dict[int, list[dict]]:
    """Bucket start time -> the samples in it, from the statistics answers (a VPG's, or a list of them)."""
    out: dict[int, list[dict]] = {}
    for answer in answers:
        for vpg in answer if isinstance(answer, list) else [answer]:
            for s in vpg["Samples"]:
                t = int(datetime.fromisoformat(s["TimeStamp"].replace("Z", "+00:00")).timestamp()) // INTERVAL * INTERVAL
                if start <= t < start + 3600:
                    out[t] = [*out.get(t, []), s]
    return out


def _answers(page) -> list:
    """The statistics responses the page will receive (the tests poll rarely: one read each)."""
    seen: list = []
    page.on("response", lambda r: seen.append(r) if "/statistics" in r.url and r.request.method == "GET" else None)
    return seen


def test_dashboard_charts_show_the_statistics_of_every_vpg(plugin_lab, page):
    site = plugin_lab.protected
    seen = _answers(page)
    login(page, site, "/plugin/?poll=600000")
    chart = page.get_by_test_id("rpo-chart")
    expect(chart).to_have_attribute("data-filled", SOME)
    answers = [r.json() for r in seen if "/statistics/vpgs" in r.url]
    assert len(answers) == 1, [r.url for r in seen]
    start = int(chart.get_attribute("data-start"))
    buckets = _buckets(answers, start)
    assert chart.get_attribute("data-buckets") == "60"
    # Every bucket with data is drawn, the others are gaps (the lab is younger than the hour).
    assert int(chart.get_attribute("data-filled")) == len(buckets) < 60
    last = buckets[max(buckets)]
    assert float(chart.get_attribute("data-last")) == max(s["ActualRPO"] for s in last)
    tp = page.get_by_test_id("throughput-chart")
    assert int(tp.get_attribute("data-filled")) == len(buckets)
    assert abs(float(tp.get_attribute("data-last")) - sum(s["ThroughputInMB"] for s in last)) < 1e-6


def test_a_vpg_page_charts_its_own_statistics(plugin_lab, page):
    site = plugin_lab.protected
    vpg = plugin_lab.vpg["identifier"]
    seen = _answers(page)
    login(page, site, f"/plugin/?poll=600000#/vpg/{vpg}")
    chart = page.get_by_test_id("vpg-rpo-chart")
    expect(chart).to_have_attribute("data-filled", SOME)
    answers = [r.json() for r in seen if f"/vpgs/{vpg}/statistics" in r.url]
    assert len(answers) == 1 and answers[0]["VpgIdentifier"] == vpg
    buckets = _buckets(answers, int(chart.get_attribute("data-start")))
    assert int(chart.get_attribute("data-filled")) == len(buckets) < 60
    assert float(chart.get_attribute("data-last")) == buckets[max(buckets)][0]["ActualRPO"]
    journal = page.get_by_test_id("vpg-journal-chart")
    assert float(journal.get_attribute("data-last")) == buckets[max(buckets)][0]["JournalUsedStorageInMB"]
