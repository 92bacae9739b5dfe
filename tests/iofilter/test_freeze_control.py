"""Freeze / thaw and the control socket: the MARK sits between the writes completed before the freeze and
the writes held by it; a hold is bounded and never fails the IO; in-flight writes finish first."""

from __future__ import annotations

import threading
import time

import pytest

from tests.iofilter.nbdraw import RawNbd
from vra_appliance.iofilter.control import ControlError, FilterControl
from vra_appliance.iofilter.freeze import FreezeCoordinator, FreezeError, WriteGate


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll a counter the code under test exposes (no event to wait on from outside the process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_mark_sits_between_earlier_and_held_writes(make_filter, vra, sockdir, ring):
    filt = make_filter(vra=str(sockdir / "vra.sock"), volumes=("vol-a", "vol-b"), ring=ring)
    assert filt.splitter.wait_connected(5)
    a, b = RawNbd(str(filt.unix_path)), RawNbd(str(filt.unix_path))
    a.connect_export("vol-a")
    b.connect_export("vol-b")
    assert a.write(0, b"before") == 0
    ctl = FilterControl(filt.control_path)
    reply = ctl.freeze("cp-1", ["vol-a", "vol-b"], timeout_ms=1000)
    assert reply == {"ok": True, "marked": True, "dirty": False}
    held = threading.Thread(target=lambda: a.write(4096, b"after"))
    held.start()
    assert wait_until(lambda: filt.gates["vol-a"].held_writes == 1)
    assert held.is_alive()  # the write waits at the gate
    thaw = ctl.thaw("cp-1")
    held.join(5)
    assert not held.is_alive() and thaw["ok"] and thaw["expired"] is False and thaw["held_ms"] > 0
    assert b.write(0, b"b-after") == 0
    assert filt.splitter.wait_drained(5)
    seen = [(e[0], e[3] if e[0] == "write" else e[1]) for e in vra.events if e[0] in ("write", "mark")]
    assert seen == [("write", b"before"), ("mark", "cp-1"), ("write", b"after"), ("write", b"b-after")]
    ctl.close()


def test_a_hold_expires_by_itself_and_the_checkpoint_fails(make_filter, vra, sockdir):
    filt = make_filter(vra=str(sockdir / "vra.sock"))
    assert filt.splitter.wait_connected(5)
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    with FilterControl(filt.control_path) as ctl:
        assert ctl.freeze("cp-2", ["vol-a"], timeout_ms=30)["marked"]
        assert c.write(0, b"x" * 512) == 0  # held at most 30 ms, then released: no error
        thaw = ctl.thaw("cp-2")
        assert thaw["expired"] is True and thaw["held_ms"] == pytest.approx(30, abs=1)
        assert ctl.counters()["checkpoints"]["expired"] == 1
        assert ctl.freeze("cp-3", [], timeout_ms=50)["marked"]  # the next checkpoint works
        assert ctl.thaw("cp-3")["ok"]


def test_freeze_refusals(make_filter):
    filt = make_filter()
    with FilterControl(filt.control_path) as ctl:
        with pytest.raises(ControlError, match="unknown volumes"):
            ctl.freeze("c", ["nope"])
        with pytest.raises(ControlError, match="timeout_ms"):
            ctl.freeze("c", [], timeout_ms=5000)
        reply = ctl.freeze("c", [], timeout_ms=1000)
        assert reply["marked"] is False  # no VRA attached
        with pytest.raises(ControlError, match="still frozen"):
            ctl.freeze("d", [])
        with pytest.raises(ControlError, match="no freeze of checkpoint 'd'"):
            ctl.thaw("d")
        assert ctl.thaw("c")["expired"] is False


def test_in_flight_writes_finish_before_the_mark():
    gate = WriteGate()
    marks = []
    coordinator = FreezeCoordinator({"v": gate}, lambda cp, vols: marks.append(cp) or True, lambda vols: False)
    release = threading.Event()
    entered = threading.Event()

    def slow_write():
        with gate:
            entered.set()
            release.wait()

    writer = threading.Thread(target=slow_write)
    writer.start()
    entered.wait()
    result = {}
    freezer = threading.Thread(target=lambda: result.update(coordinator.freeze("cp", ["v"], timeout_ms=1000)))
    freezer.start()
    assert not marks  # the write in flight holds the mark back
    release.set()
    freezer.join(5)
    writer.join(5)
    assert marks == ["cp"] and result == {"ok": True, "marked": True, "dirty": False}
    coordinator.thaw("cp")


def test_a_write_stuck_in_flight_fails_the_checkpoint_not_the_freeze():
    gate = WriteGate()
    coordinator = FreezeCoordinator({"v": gate}, lambda cp, vols: True, lambda vols: True)
    release = threading.Event()
    entered = threading.Event()
    writer = threading.Thread(target=lambda: [gate.__enter__(), entered.set(), release.wait(), gate.__exit__()])
    writer.start()
    entered.wait()
    try:
        assert coordinator.freeze("cp", ["v"], timeout_ms=20) == {"ok": True, "marked": False, "dirty": True}
        with pytest.raises(FreezeError):
            coordinator.freeze("", ["v"])
    finally:
        release.set()
        writer.join(5)


def test_control_counters_dirty_and_bad_requests(make_filter):
    filt = make_filter(volumes=("vol-a", "vol-b"))
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-b")
    for i in range(10):
        assert c.write(i * 8192, b"z" * 4096) == 0
    assert c.read(0, 4096)[0] == 0
    with FilterControl(filt.control_path) as ctl:
        counters = ctl.counters()
        assert counters["writes"] == 10 and counters["reads"] == 1 and counters["bytes_written"] == 40960
        assert counters["vra"] == "none" and counters["diverted_writes"] == 10
        assert counters["dirty_bytes"] == 40960 and counters["over_coverage"] == 0
        assert counters["iops"] > 0 and counters["queue_bytes"] == 0
        assert counters["volumes"]["vol-b"]["writes"] == 10 and counters["volumes"]["vol-a"]["dirty_bytes"] == 0
        status = ctl.status()
        assert status["volumes"]["vol-a"]["generation"] == 1 and status["volumes"]["vol-a"]["unclean"] is False
        assert ctl.dirty("vol-b")["extents"] == [[i * 8192, 4096] for i in range(10)]
        with pytest.raises(ControlError, match="unknown volume"):
            ctl.dirty("vol-c")
        with pytest.raises(ControlError, match="unknown op"):
            ctl.request("explode")
        ctl._sock.sendall(b"this is not json\n[1, 2]\n")
        assert b"not JSON" in ctl._rfile.readline()
        assert b'JSON object with an' in ctl._rfile.readline()
        assert ctl.counters()["ok"]  # the connection survived


def test_a_hold_that_expires_lets_the_compiled_writes_go_on_by_themselves(make_filter, vra, sockdir):
    """The compiled write loop sees the hold as a flag and waits at the gate in Python; when the hold's
    deadline passes without a thaw, the waiting write completes and the flag is cleared, so later writes
    do not wait (and the checkpoint is reported expired)."""
    filt = make_filter(vra=str(sockdir / "vra.sock"))
    assert filt.splitter.wait_connected(5)
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    assert c.write(0, b"before") == 0
    with FilterControl(filt.control_path) as ctl:
        assert ctl.freeze("cp", ["vol-a"], timeout_ms=300)["marked"] is True
        held = threading.Thread(target=lambda: c.write(4096, b"held"))
        held.start()
        assert wait_until(lambda: filt.gates["vol-a"].held_writes == 1)
        held.join(5)
        assert not held.is_alive()  # past the deadline: it went on without a thaw
        for i in range(50):  # the flag is clear: these do not wait at the gate
            assert c.write(8192 + i * 512, b"later") == 0
        assert filt.gates["vol-a"].held_writes == 1
        assert ctl.thaw("cp")["expired"] is True
    assert filt.splitter.wait_drained(5)
    seen = [(e[0], e[3] if e[0] == "write" else e[1]) for e in vra.events if e[0] in ("write", "mark")]
    assert seen[:3] == [("write", b"before"), ("mark", "cp"), ("write", b"held")] and len(seen) == 53
