"""`python -m bench plugin`: the web UI's dashboard on a large site, in Debian's chromium (Playwright).

A vcsim with 50 hosts and 1,000 VMs, `zvm serve` (gunicorn, as shipped) and 100 VPGs of 10 VMs each created
through the API. Measured with a fresh browser context each time (a cold cache, as a first visit):

- ``first_render_ms``: navigation start to the first contentful paint (the browser's own figure);
- ``live_data_ms``: navigation start to the page showing the API's data (the dashboard's first refresh done);
- ``bytes``: what the page load transferred (resource timing, encoded bodies); ``first_load_api_bytes``
  the API's JSON (decoded) the first refresh read, and ``poll_bytes`` what a later refresh reads on average;
- ``api_calls_per_min``: the API calls an open dashboard makes, counted over ``--watch`` seconds at the
  default 5 s polling, per minute.

Named baseline, run interleaved with it (``--rounds`` times each, medians): **the login page** of the same
ZVM (the same HTML, CSS and JS, one API call, no data). Ratios are dashboard / login page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.report import emit

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Read in the page once it is ready: the browser's paint timing, the resources' sizes, the API's count.
PAGE_FIGURES = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const res = performance.getEntriesByType('resource');
  const bytes = [nav, ...res].reduce((a, e) => a + (e.encodedBodySize || 0), 0);
  return {fcp: fcp ? fcp.startTime : null, live: window.zvrStats.liveAt || null, bytes,
          calls: window.zvrStats.calls, apiBytes: window.zvrStats.bytes, refreshes: window.zvrStats.refreshes || 0};
}"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_login(browser, url: str) -> dict:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{url}/plugin/")
    page.wait_for_selector("[data-testid=login]")
    page.wait_for_load_state("load")
    figures = page.evaluate(PAGE_FIGURES)
    ctx.close()
    return {"first_render_ms": figures["fcp"], "live_data_ms": figures["fcp"], "bytes": figures["bytes"]}


def measure_dashboard(browser, url: str, cookies: list, watch: float | None = None) -> dict:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.add_cookies(cookies)
    page = ctx.new_page()
    page.goto(f"{url}/plugin/#/dashboard")
    page.wait_for_selector("body[data-rendered=true] [data-testid=vpg-table] tr[data-vpg]")
    page.wait_for_load_state("load")
    figures = page.evaluate(PAGE_FIGURES)
    out = {"first_render_ms": figures["fcp"], "live_data_ms": figures["live"], "bytes": figures["bytes"]}
    if watch:
        time.sleep(watch)
        after = page.evaluate(PAGE_FIGURES)
        out["api_calls_per_min"] = round((after["calls"] - figures["calls"]) * 60 / watch, 1)
        polls = max(1, after["refreshes"] - figures["refreshes"])
        out["poll_bytes"] = round((after["apiBytes"] - figures["apiBytes"]) / polls)
        out["first_load_api_bytes"] = figures["apiBytes"]
    ctx.close()
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench plugin", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--vpgs", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--watch", type=float, default=30.0, help="seconds an open dashboard is watched")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from bench.api import Process, protect_evenly
    from zvm.client import ZvmClient
    from zvm.lab.vcsim import Vcsim, VcsimSpec

    work = Path(tempfile.mkdtemp(prefix="bench-plugin-"))
    extra: dict = {"hosts": args.hosts, "vms": args.vms, "vpgs": args.vpgs, "rounds": args.rounds,
                   "baseline": "the login page of the same ZVM (same assets, one API call, no data)",
                   "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    procs: list = []
    sim = Vcsim.start("bench", work / "vcsim", VcsimSpec(hosts_per_cluster=args.hosts, vms_per_pool=args.vms,
                                                         disk_mb=1))
    try:
        password = "bench-Pass-1"
        port = _free_port()
        # Plain HTTP on loopback (a ZVM serves HTTPS by default): both pages pay the same, the ratios hold.
        serve = Process([sys.executable, "-m", "zvm.cli", "serve", "--data-dir", str(work / "zvm"),
                         "--host", "127.0.0.1", "--port", str(port), "--insecure-http",
                         "--vcenter-url", sim.url, "--vcenter-username", sim.username, "--vcenter-verify", "false",
                         "--site-name", "Bench"], env={"ZVM_VCENTER_PASSWORD": sim.password,
                                                       "ZVM_ADMIN_PASSWORD": password})
        procs.append(serve)
        serve.wait_for("inventory of")
        url = f"http://127.0.0.1:{port}"
        with ZvmClient(url).login("admin", password) as client:
            protect_evenly(client, args.vpgs)
            assert len(client.vpgs()) == args.vpgs

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            ctx = browser.new_context()
            page = ctx.new_page()
            page.goto(f"{url}/plugin/")
            page.get_by_label("Password").fill(password)
            page.get_by_test_id("login").click()
            page.wait_for_selector("body[data-rendered=true]")
            cookies = ctx.cookies()
            ctx.close()
            login_runs, dash_runs = [], []
            for _ in range(args.rounds):  # interleaved, so both see the same machine
                login_runs.append(measure_login(browser, url))
                dash_runs.append(measure_dashboard(browser, url, cookies))
            watched = measure_dashboard(browser, url, cookies, watch=args.watch)
            browser.close()

        def median(runs, key):
            return statistics.median(r[key] for r in runs)

        base = {k: median(login_runs, k) for k in ("first_render_ms", "live_data_ms", "bytes")}
        rows = [{"page": "baseline: login page", **{k: round(v, 1) for k, v in base.items()},
                 "first_render_ratio": 1.0, "live_data_ratio": 1.0, "bytes_ratio": 1.0}]
        dash = {k: median(dash_runs, k) for k in ("first_render_ms", "live_data_ms", "bytes")}
        rows.append({"page": f"dashboard, {args.vpgs} VPGs / {args.vms} VMs / {args.hosts} hosts",
                     **{k: round(v, 1) for k, v in dash.items()},
                     "first_render_ratio": round(dash["first_render_ms"] / base["first_render_ms"], 2),
                     "live_data_ratio": round(dash["live_data_ms"] / base["live_data_ms"], 2),
                     "bytes_ratio": round(dash["bytes"] / base["bytes"], 2)})
        extra["api_calls_per_min"] = watched["api_calls_per_min"]
        extra["poll_bytes"] = watched["poll_bytes"]
        extra["first_load_api_bytes"] = watched["first_load_api_bytes"]
        extra["runs"] = {"login": login_runs, "dashboard": dash_runs}
        emit("plugin", rows, extra)
        return 0
    finally:
        for proc in procs:
            proc.stop()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
