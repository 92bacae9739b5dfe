"""The site throttle (token buckets shared by VPG priority), its transport wrapper, and the adaptive zstd level."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from vra_appliance.protect.compression import MAX_LEVEL, MIN_LEVEL, AdaptiveLevel
from vra_appliance.protect.throttle import SiteThrottle, ThrottledTransport, TokenBucket
from vra_appliance.stream.wire import StreamWrite, seal


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_token_bucket_rate_and_burst() -> None:
    b = TokenBucket(rate=1000.0, burst=100.0, now=0.0)
    assert b.reserve(100, 0.0) == 0.0
    assert b.reserve(500, 0.0) == pytest.approx(0.5)  # reserved: the balance goes negative
    assert b.reserve(100, 0.5) == pytest.approx(0.1)
    assert TokenBucket(0, 0, 0).reserve(10**9, 0) == 0.0  # rate 0: unlimited


def drive(throttle: SiteThrottle, clock: Clock, vpgs: list[str], seconds: float, chunk: int = 10_000) -> dict:
    """Round-robin senders; returns bytes each got through in ``seconds``."""
    sent = dict.fromkeys(vpgs, 0)
    ready = dict.fromkeys(vpgs, 0.0)
    while clock.t < seconds:
        vpg = min(vpgs, key=lambda v: ready[v])
        clock.t = max(clock.t, ready[vpg])
        wait = throttle.reserve(vpg, chunk, clock.t)
        ready[vpg] = clock.t + wait
        sent[vpg] += chunk
    return sent


def test_site_limit_is_shared_by_priority_and_idle_shares_are_reused() -> None:
    clock = Clock()
    t = SiteThrottle(1_000_000, clock=clock, sleep=clock.sleep)
    t.register("gold", priority=3)
    t.register("bronze", priority=1)
    sent = drive(t, clock, ["gold", "bronze"], 10.0)
    total = sum(sent.values())
    assert total == pytest.approx(10_000_000, rel=0.05)
    assert sent["gold"] / sent["bronze"] == pytest.approx(3.0, rel=0.1)
    # bronze alone (gold idle for longer than the active window) gets the whole limit
    clock.t += 5
    alone = drive(t, clock, ["bronze"], clock.t + 5)
    assert alone["bronze"] == pytest.approx(5_000_000, rel=0.05)
    assert t.share("bronze") == pytest.approx(1_000_000)


def test_throttled_transport_takes_wire_bytes_before_sending() -> None:
    clock = Clock()
    throttle = SiteThrottle(100_000, clock=clock, sleep=clock.sleep, burst_seconds=0.0)
    calls = []

    class Inner:
        def open(self, hello):
            return None

        def send(self, batch):
            calls.append(clock.t)
            f = Future()
            f.set_result(None)
            return f

        def close(self):
            pass

    tt = ThrottledTransport(Inner(), throttle, "vpg")
    batch = seal("vpg", [StreamWrite(1, 0, "v", 0, bytes(range(256)) * 200)], codec=1)
    for _ in range(3):
        tt.send(batch)
    assert calls[0] == pytest.approx(batch.wire_bytes / 100_000)
    assert calls[2] == pytest.approx(3 * batch.wire_bytes / 100_000)
    assert throttle.waited_s["vpg"] == pytest.approx(calls[2])


def test_adaptive_level_goes_down_when_compression_is_the_bottleneck_and_up_when_the_link_is() -> None:
    lvl = AdaptiveLevel(level=3, window=4)
    for _ in range(4):
        lvl.observe(compress_s=0.008, wait_s=0.0, elapsed_s=0.010)  # compressing 80% of the time
    assert lvl.level == 2
    for _ in range(4 * 20):
        lvl.observe(0.008, 0.0, 0.010)
    assert lvl.level == MIN_LEVEL
    for _ in range(4 * 40):
        lvl.observe(compress_s=0.001, wait_s=0.008, elapsed_s=0.010)  # waiting on the link/throttle
    assert lvl.level == MAX_LEVEL
    level = lvl.level
    for _ in range(8):
        lvl.observe(0.003, 0.002, 0.010)  # neither: stays
    assert lvl.level == level
