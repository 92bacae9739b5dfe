"""`python -m bench login [--tries N]`: what a failed login costs and tells, and how fast one can guess.

1. Answer time of ``POST /v1/session/add`` (the ZVM app in-process, SQLite) for an unknown user, a known
   user with a wrong password (the baseline: the unknown user's ratio to it should be 1) and a known user
   with the right one; ``--tries`` of each (30), interleaved in a random order so the machine's load falls
   on all alike, with
   throttling out of the way (a new client address and user name per try);
2. with throttling as shipped (5 free failures, at most 300 s) and a fake clock, the wrong logins one
   client address (or one user name from many addresses) gets answered with 401 in its first minute and
   its first hour, retrying whenever Retry-After allows. Those answers are real: each runs the login path.
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import tempfile
import time

from bench.report import emit

PASSWORD = "Bench-pass-1"


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _app(data_dir: str, **config):
    from zvm.api import create_app

    app = create_app({"data_dir": data_dir, "admin_password": PASSWORD, "site_name": "bench", **config})
    app.extensions["zvm"].db.connect(reuse_if_open=True)
    return app


def answer_times(tries: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        app = _app(tmp, login_free_failures=1000)
        client = app.test_client()
        kinds = {"unknown user": ("nosuchuser{}", "x"), "known user, wrong password": ("admin", "wrong{}"),
                 "known user, right password": ("admin", PASSWORD)}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        order = list(kinds)
        for i in range(tries):
            random.shuffle(order)  # no kind always first (or last) in a round
            for kind in order:
                user, password = kinds[kind]
                headers = _basic(user.format(i), password.format(i))
                started = time.perf_counter()
                resp = client.post("/v1/session/add", headers=headers, environ_base={"REMOTE_ADDR": f"10.1.{i}.1"})
                times[kind].append(time.perf_counter() - started)
                assert resp.status_code == (200 if password == PASSWORD else 401), resp.data
        app.extensions["zvm"].stop()
    base = statistics.median(times["known user, wrong password"])
    return [{"login": kind, "tries": tries, "median_ms": statistics.median(t) * 1000,
             "p90_ms": sorted(t)[int(len(t) * 0.9) - 1] * 1000, "ratio_to_wrong_password": statistics.median(t) / base}
            for kind, t in times.items()]


class _Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def guesses(window_s: float, per: str) -> int:
    """Wrong logins answered 401 within ``window_s`` (fake seconds) to a client that waits out each 429."""
    with tempfile.TemporaryDirectory() as tmp:
        app = _app(tmp)
        clock = _Clock()
        app.extensions["login_throttle"].clock = clock
        client = app.test_client()
        start, answered, i = clock.now, 0, 0
        while clock.now - start < window_s:
            user, address = ("admin", f"10.2.{i // 250}.{i % 250}") if per == "user" else (f"u{i}", "10.3.0.1")
            resp = client.post("/v1/session/add", headers=_basic(user, f"guess{i}"),
                               environ_base={"REMOTE_ADDR": address})
            i += 1
            if resp.status_code == 401:
                answered += 1
            else:
                assert resp.status_code == 429, resp.data
                clock.now += int(resp.headers["Retry-After"])
        app.extensions["zvm"].stop()
        return answered


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench login", description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=30)
    args = parser.parse_args(argv)
    rows = answer_times(args.tries)
    rate = [{"guesser": f"one {per}", "wrong_logins_first_minute": guesses(60, per),
             "wrong_logins_first_hour": guesses(3600, per)} for per in ("client address", "user")]
    emit("login", rows, {"throttle": rate})
    print()
    for r in rate:
        print(f"| {r['guesser']} | {r['wrong_logins_first_minute']} in the first minute | "
              f"{r['wrong_logins_first_hour']} in the first hour |")
    return 0
