"""zvr_common.loop: passes, wake, stop, back-off after failures, rate-limited error logging."""

from __future__ import annotations

import logging
import threading

import pytest

from zvr_common.loop import Loop


class Counting(Loop):
    def __init__(self, fail: int = 0, **kw) -> None:
        super().__init__("counting", kw.pop("interval", 60.0), **kw)
        self.passes = 0
        self.fail = fail
        self.after = 0
        self.ran = threading.Event()

    def run_once(self) -> int:
        self.passes += 1
        self.ran.set()
        if self.passes <= self.fail:
            raise RuntimeError(f"pass {self.passes} failed")
        return self.passes

    def after_pass(self) -> None:
        self.after += 1


def test_run_once_is_callable_without_the_thread() -> None:
    loop = Counting()
    assert loop.run_once() == 1 and not loop.running


def test_target_loop_and_missing_run_once() -> None:
    calls = []
    assert Loop("t", 1.0, target=lambda: calls.append(1)).run_once() is None and calls == [1]
    with pytest.raises(NotImplementedError, match="implement run_once"):
        Loop("bare", 1.0).run_once()
    with pytest.raises(ValueError, match="interval"):
        Loop("neg", -1.0)


def test_start_runs_a_pass_and_wake_runs_the_next_at_once() -> None:
    loop = Counting(interval=3600.0)
    loop.start()
    loop.start()  # idempotent: still one thread
    try:
        assert loop.ran.wait(10)
        loop.ran.clear()
        loop.wake()
        assert loop.ran.wait(10), "wake() did not run a pass before the hour-long interval"
        assert loop.passes >= 2 and loop.after >= 1
    finally:
        loop.stop()
    assert not loop.running
    loop.stop()  # idempotent


def test_stop_from_inside_a_pass_does_not_deadlock() -> None:
    class SelfStopping(Loop):
        def run_once(self) -> None:
            self.stop()

    loop = SelfStopping("self", 0.01)
    loop.start()
    for _ in range(1000):
        if not loop.running:
            break
        threading.Event().wait(0.01)
    assert not loop.running and loop.stopping


def test_backoff_doubles_per_failure_up_to_the_cap_and_resets_on_success() -> None:
    loop = Counting(fail=5, interval=1.0, max_backoff=6.0)
    delays = []
    for _ in range(6):
        loop.pass_once()
        delays.append(loop.next_delay())
    assert delays == [2.0, 4.0, 6.0, 6.0, 6.0, 1.0]
    assert loop.failures == 0 and loop.last_error is None and loop.after == 6


def test_errors_are_logged_first_then_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    loop = Counting(fail=10, interval=1.0, log_every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="zvr_common.loop"):
        for t in (0, 1, 2, 30, 61, 62, 121, 122, 123, 124, 125):
            now[0] = float(t)
            loop.pass_once()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("loop counting: pass failed: pass 1 failed")
    assert caplog.records[0].exc_info is not None
    assert [m for m in messages if "still failing" in m] == [
        "loop counting: still failing (5 passes in a row): pass 5 failed",
        "loop counting: still failing (7 passes in a row): pass 7 failed",
    ]
    assert messages[-1] == "loop counting: passes succeed again after 10 failures"
    assert loop.last_error is None


def test_delay_replaces_the_interval_after_success_and_failures_still_back_off() -> None:
    due = [0.25]
    loop = Counting(fail=1, interval=2.0, max_backoff=16.0, delay=lambda: due[0])
    assert loop.next_delay() == 0.25
    due[0] = -1.0  # overdue: run at once, never a negative wait
    assert loop.next_delay() == 0.0
    assert not loop.pass_once() and loop.next_delay() == 4.0  # a failure backs off from the interval
    assert loop.pass_once() and loop.next_delay() == 0.0
