"""`python -m bench api`: the ZVM's REST API on a large site.

A protected vcsim with 50 hosts and 1,000 VMs. Measured:

1. inventory load: one full read through RetrievePropertiesEx (zvm.vcenter.inventory), and the ZVM's own
   path: the PropertyCollector watch's first update plus writing every row (zvm.inventory.InventorySync);
2. with 100 VPGs of 10 VMs each (created through the API), latency p50 / p95 / p99 and throughput of
   GET /v1/vpgs and GET /v1/vms under 20 concurrent clients, against `zvm serve` (gunicorn, as shipped);
3. side by side, the same load on two baselines under the same gunicorn settings: a trivial Flask
   endpoint (``/ping``) and the ZVM's cheapest authenticated call (GET /v1/session), so the figures read
   as ratios on this shared, noisy machine;
4. the same two GETs from one client right after a change (the answer cache cannot help): the cost of
   building the answer.

Each client asks for the answer as a real one does and decodes it inside the timed part: the main rows send
python-requests' ``Accept-Encoding: gzip, deflate`` (zvm.client, scripts); the ``zstd client`` rows send a
browser's or ``curl --compressed``'s ``gzip, deflate, br, zstd``. The ``changing`` row adds a writer that
moves the database's revision after every 100 answers (20 changes in the row; each makes every server
process build the answer again). ``wire_bytes`` is what crossed the socket; ``client_cpu_ms`` the load generator's
own CPU per request (parsing and decoding: it shares the machine's cores with the server).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
import zstandard

from bench.report import emit

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline_app():
    import flask

    app = flask.Flask("baseline")

    @app.get("/ping")
    def ping():
        return {"ok": True}

    return app


def run_baseline(port: int, workers: int, threads: int) -> None:
    """gunicorn with the ZVM's settings, serving the trivial app (started as a subprocess)."""
    from gunicorn.app.base import BaseApplication

    class Baseline(BaseApplication):
        def load_config(self):
            options = {"bind": [f"127.0.0.1:{port}"], "workers": workers, "threads": threads,
                       "worker_class": "gthread", "loglevel": "info", "errorlog": "-"}
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return baseline_app()

    print("baseline ready", flush=True)
    Baseline().run()


class Process:
    """A child process whose merged output is read in a thread; ``wait_for`` blocks on a line."""

    def __init__(self, cmd: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()
        with self.cond:
            self.lines.append("<eof>")
            self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: any(text in ln or ln == "<eof>" for ln in self.lines), timeout):
                raise RuntimeError(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines[-20:]))
            if not any(text in ln for ln in self.lines):
                raise RuntimeError(f"process ended before {text!r}:\n" + "\n".join(self.lines[-20:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(10)
        self.proc.stdout.close()


REQUESTS_ENCODINGS = "gzip, deflate"  # python-requests (and so zvm.client)
BROWSER_ENCODINGS = "gzip, deflate, br, zstd"  # browsers, curl --compressed


def _get(conn: http.client.HTTPConnection, path: str, headers: dict) -> tuple[int, bytes, int]:
    """(status, decoded body, bytes on the wire) of one GET."""
    conn.request("GET", path, headers={"Accept-Encoding": REQUESTS_ENCODINGS, **headers})
    resp = conn.getresponse()
    data = resp.read()
    wire = len(data)
    # the client gets the whole answer, as a real one would
    encoding = resp.getheader("Content-Encoding")
    if encoding == "gzip":
        data = gzip.decompress(data)
    elif encoding == "zstd":
        data = zstandard.ZstdDecompressor().decompress(data)
    return resp.status, data, wire


def protect_evenly(client, vpgs: int) -> None:
    """``vpgs`` VPGs through the API, the site's VMs shared out evenly, each recovering to its own site."""
    site = client.local_site()["SiteIdentifier"]
    host = client.hosts(site)[0]["HostIdentifier"]
    datastore = client.datastores(site)[0]["DatastoreIdentifier"]
    vms = sorted(v["VmIdentifier"] for v in client.vms(site))
    per = max(1, len(vms) // vpgs)
    for i in range(vpgs):
        client.create_vpg(f"vpg-{i:03d}", vms[i * per:(i + 1) * per], recovery_site=site,
                          recovery_host=host, recovery_datastore=datastore)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(url: str, headers: dict, clients: int, requests_total: int, warmup: int = 40,
         churn=None, churn_every: int = 100) -> dict:
    """``clients`` threads, each with its own keep-alive connection (http.client: a light client, so the
    figures are the server's more than the load generator's), share ``requests_total`` GETs. ``churn()``,
    when given, runs (in its own thread) after every ``churn_every`` answers: as many changes whatever the
    server's speed."""
    latencies: list[float] = []
    wire: list[int] = []
    errors = []
    lock = threading.Lock()
    per_client = max(1, requests_total // clients)
    start_gate = threading.Barrier(clients + 1)
    parts = urlsplit(url)

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            for _ in range(max(1, warmup // clients)):
                _get(conn, parts.path, headers)
            start_gate.wait()
            mine = []
            for _ in range(per_client):
                t0 = time.perf_counter()
                status, _data, size = _get(conn, parts.path, headers)
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(status)
                if churn:
                    with lock:
                        answered[0] += 1
                        if answered[0] % churn_every == 0:
                            due.release()
            with lock:
                latencies.extend(mine)
                wire.append(size)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    stop = threading.Event()
    due = threading.Semaphore(0)
    answered = [0]
    changes = [0]

    def churning():
        while True:
            due.acquire()
            if stop.is_set():
                return
            churn()
            changes[0] += 1

    churner = threading.Thread(target=churning) if churn else None
    start_gate.wait()
    t0 = time.perf_counter()
    cpu0 = _cpu()
    if churner:
        churner.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    stop.set()
    due.release()
    if churner:
        churner.join()
    latencies.sort()
    out = {"p50_ms": 1000 * _pct(latencies, 50), "p95_ms": 1000 * _pct(latencies, 95),
           "p99_ms": 1000 * _pct(latencies, 99), "rps": len(latencies) / elapsed, "requests": len(latencies),
           "errors": len(errors), "wire_bytes": max(wire, default=0),
           "client_cpu_ms": 1000 * cpu / max(1, len(latencies))}
    if churn:
        out["changes"] = changes[0]
    return out


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(pct / 100 * len(values) + 0.5)) - 1))
    return values[k]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench api", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--vpgs", type=int, default=100)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=2000, help="GETs per endpoint under load")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args(argv)

    from zvm.config import load_config
    from zvm.lab.vcsim import Vcsim, VcsimSpec
    from zvm.service import Zvm
    from zvm.vcenter import VCenter, VCenterConfig

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    extra: dict = {"hosts": args.hosts, "vms": args.vms, "vpgs": args.vpgs, "clients": args.clients,
                   "gunicorn": f"{args.workers} workers x {args.threads} threads (gthread)",
                   "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    procs: list[Process] = []
    sim = Vcsim.start("bench", work / "vcsim", VcsimSpec(hosts_per_cluster=args.hosts, vms_per_pool=args.vms,
                                                         disk_mb=1))
    try:
        # 1. inventory load
        with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
            t0 = time.perf_counter()
            inv = vc.inventory()
            extra["inventory_read_s"] = round(time.perf_counter() - t0, 3)
        assert len(inv.vms) == args.vms and len(inv.hosts) == args.hosts, (len(inv.vms), len(inv.hosts))
        password = "bench-Pass-1"
        config = load_config(env={}, data_dir=str(work / "zvm"), admin_password=password, vcenter_url=sim.url,
                             vcenter_username=sim.username, vcenter_password=sim.password,
                             vcenter_verify="false", site_name="Bench")
        zvm = Zvm(config).open()
        t0 = time.perf_counter()
        zvm.inventory.sync_once()
        extra["inventory_load_zvm_s"] = round(time.perf_counter() - t0, 3)
        zvm.stop()

        # 2. the service, and 100 VPGs through the API
        port = _free_port()
        serve = Process([sys.executable, "-m", "zvm.cli", "serve", "--data-dir", str(work / "zvm"),
                         "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
                         "--threads", str(args.threads)], env={"ZVM_VCENTER_PASSWORD": sim.password})
        procs.append(serve)
        serve.wait_for("inventory of")  # the engine's own first load is done: quiet from here
        url = f"http://127.0.0.1:{port}"
        from zvm.client import ZvmClient

        with ZvmClient(url).login("admin", password) as client:
            t0 = time.perf_counter()
            protect_evenly(client, args.vpgs)
            extra["create_vpgs_s"] = round(time.perf_counter() - t0, 3)
            assert len(client.vpgs()) == args.vpgs
            headers = {"x-zerto-session": client.token}

            # 3. baselines and the two GETs under load
            bport = _free_port()
            baseline = Process([sys.executable, "-c", f"from bench.api import run_baseline; "
                                f"run_baseline({bport}, {args.workers}, {args.threads})"])
            procs.append(baseline)
            baseline.wait_for("Booting worker", timeout=60)
            zstd_client = {**headers, "Accept-Encoding": BROWSER_ENCODINGS}
            churn_session = requests.Session()

            def change():  # a new draft: the revision moves, the lists' content does not
                churn_session.post(f"{url}/v1/vpgSettings", headers=headers, timeout=60)

            targets = [("baseline: Flask /ping", f"http://127.0.0.1:{bport}/ping", {}, None),
                       ("baseline: GET /v1/session", f"{url}/v1/session", headers, None),
                       ("GET /v1/vpgs", f"{url}/v1/vpgs", headers, None),
                       ("GET /v1/vms", f"{url}/v1/vms", headers, None),
                       ("GET /v1/vpgs (zstd client)", f"{url}/v1/vpgs", zstd_client, None),
                       ("GET /v1/vms (zstd client)", f"{url}/v1/vms", zstd_client, None),
                       ("GET /v1/vms (changing)", f"{url}/v1/vms", headers, change)]
            rows = []
            for name, target, hdrs, churn in targets:
                parts = urlsplit(target)
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                size = len(_get(conn, parts.path, hdrs)[1])  # decoded
                conn.close()
                row = {"endpoint": name, "bytes": size,
                       **load(target, hdrs, args.clients, args.requests, churn=churn)}
                rows.append(row)
            churn_session.close()
            base = rows[0]["p95_ms"]
            for row in rows:
                row["p95_vs_ping"] = row["p95_ms"] / base

            # 4. one client, right after a change: the answer is built, not cached
            with requests.Session() as s:
                for path in ("/v1/vpgs", "/v1/vms"):
                    times = []
                    for _ in range(15):
                        s.post(f"{url}/v1/vpgSettings", headers=headers, timeout=60)  # a change: revision moves
                        t0 = time.perf_counter()
                        s.get(f"{url}{path}", headers=headers, timeout=60)
                        times.append(time.perf_counter() - t0)
                    extra[f"uncached_{path.rsplit('/', 1)[1]}_median_ms"] = round(1000 * statistics.median(times), 1)
        extra["load_average_at_end"] = os.getloadavg()[0]
        emit("api", rows, extra)
        worst = max(r["p95_ms"] for r in rows if r["endpoint"] in ("GET /v1/vpgs", "GET /v1/vms"))
        # the target is on the rows of python-requests' encodings: what zvm.client and scripts get
        print(f"\ntarget p95 < 100 ms for GET /v1/vpgs and /v1/vms: {'met' if worst < 100 else 'NOT met'} "
              f"(worst p95 {worst:.1f} ms)")
        return 0
    finally:
        for proc in procs:
            proc.stop()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)  # the vcsim datastores and the ZVM's data: nothing to keep
