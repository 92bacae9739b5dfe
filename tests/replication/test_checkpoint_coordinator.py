"""The checkpoint coordinator against fake participants: decisions, consistency, the schedule."""

from __future__ import annotations

import pytest

from vra_appliance.protect.checkpoints import (
    DEFAULT_INTERVAL_S,
    CheckpointCoordinator,
    Decision,
    FreezeResult,
    ThawResult,
)


class FakeVra:
    def __init__(self, vra_id: str, log: list, marked=True, dirty=False, expired=False, fail=False) -> None:
        self.vra_id = vra_id
        self.log = log
        self.marked, self.dirty, self.expired, self.fail = marked, dirty, expired, fail
        self.decisions: list[Decision | None] = []

    def freeze(self, vpg, checkpoint_id, timeout_ms):
        self.log.append(("freeze", self.vra_id))
        if self.fail:
            raise ConnectionError("VRA down")
        return FreezeResult(True, self.marked, self.dirty)

    def thaw(self, vpg, checkpoint_id, decision):
        self.log.append(("thaw", self.vra_id))
        self.decisions.append(decision)
        return ThawResult(True, self.expired)


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


def coordinator(vras, clock=None, interval=DEFAULT_INTERVAL_S) -> CheckpointCoordinator:
    ids = iter(f"cp-{i}" for i in range(1, 100))
    return CheckpointCoordinator("vpg", vras, interval_s=interval, clock=clock or Clock(), new_id=lambda: next(ids))


def test_every_freeze_comes_before_any_thaw_and_the_decision_reaches_all() -> None:
    log: list = []
    vras = [FakeVra("a", log), FakeVra("b", log), FakeVra("c", log)]
    c = coordinator(vras)
    try:
        r = c.take("nightly")
    finally:
        c.stop()
    assert r.ok and r.consistent and r.checkpoint_id == "cp-1" and r.tag == "nightly"
    assert sorted(r.participants) == ["a", "b", "c"]
    kinds = [k for k, _ in log]
    assert kinds == ["freeze"] * 3 + ["thaw"] * 3
    for v in vras:
        assert v.decisions == [Decision("nightly", True, r.participants)]


@pytest.mark.parametrize("case", ["dirty", "expired", "unmarked", "down"])
def test_checkpoints_that_are_not_consistent_are_still_taken_and_say_so(case) -> None:
    log: list = []
    b = FakeVra("b", log, dirty=case == "dirty", expired=case == "expired", marked=case != "unmarked",
                fail=case == "down")
    vras = [FakeVra("a", log), b]
    c = coordinator(vras)
    try:
        r = c.take()
    finally:
        c.stop()
    assert r.ok and not r.consistent and r.message
    if case in ("unmarked", "down"):
        assert r.participants == ("a",) and b.decisions == [None]
        assert vras[0].decisions[0] == Decision("", False, ("a",))
    else:
        assert sorted(r.participants) == ["a", "b"]


def test_a_checkpoint_no_vra_could_mark_is_abandoned() -> None:
    log: list = []
    vras = [FakeVra("a", log, marked=False), FakeVra("b", log, fail=True)]
    c = coordinator(vras)
    try:
        r = c.take()
    finally:
        c.stop()
    assert not r.ok and "no VRA" in r.message
    assert [v.decisions for v in vras] == [[None], [None]]
    assert c.failed == 1


def test_timed_checkpoints_every_interval_and_not_below_one_second() -> None:
    clock = Clock()
    log: list = []
    c = coordinator([FakeVra("a", log)], clock=clock, interval=1.0)
    try:
        assert c.sync_once() is None
        clock.t += 1.0
        assert c.sync_once().checkpoint_id == "cp-1"
        clock.t += 0.5
        assert c.sync_once() is None
        c.take("on-demand")  # resets the schedule
        clock.t += 0.9
        assert c.sync_once() is None
        clock.t += 0.1
        assert c.sync_once().checkpoint_id == "cp-3"
    finally:
        c.stop()
    assert DEFAULT_INTERVAL_S == 5.0
    with pytest.raises(ValueError):
        CheckpointCoordinator("vpg", [], interval_s=0.5)
