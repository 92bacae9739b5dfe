"""One contract, both transports (in process and gRPC), against the recovery VRA's receiver."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from vra_appliance.recover import CheckpointRecord, WriteRecord
from vra_appliance.stream.transport import (
    BAD_CHECKSUM,
    GAP,
    JOURNAL_FULL,
    UNKNOWN_VPG,
    UNPAIRED_PEER,
    Hello,
    Refused,
    TransientError,
)
from vra_appliance.stream.wire import StreamMarker, StreamWrite, seal


def writes(first: int, n: int, volume: str = "vol-1", size: int = 4096) -> list[StreamWrite]:
    return [
        StreamWrite(seq, 1_000 + seq, volume, seq * size, hashlib.sha256(b"%d" % seq).digest() * (size // 32))
        for seq in range(first, first + n)
    ]


def stored(recovery, vpg: str = "vpg-1") -> list:
    return list(recovery.journal.read(vpg, 1))


def test_hello_welcome_and_acks(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    t = make_transport()
    welcome = t.open(Hello("vpg-1", "protect-a", 0))
    assert welcome.durable_seq == 0
    f1 = t.send(seal("vpg-1", writes(1, 5)))
    f2 = t.send(seal("vpg-1", writes(6, 5)))
    assert f1.result(10).durable_seq >= 5
    assert f2.result(10).durable_seq == 10
    recs = stored(recovery)
    assert [r.seq for r in recs] == list(range(1, 11))
    assert all(isinstance(r, WriteRecord) for r in recs)
    assert [r.data for r in recs] == [w.data for w in writes(1, 10)]
    assert [r.offset for r in recs] == [w.offset for w in writes(1, 10)]


def test_resend_after_reconnect_applies_nothing_twice(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    b1, b2, b3 = (seal("vpg-1", writes(1 + 4 * i, 4)) for i in range(3))
    t.send(b1).result(10)
    t.send(b2).result(10)
    t.close()
    # The sender did not see the ack of b2 (say): it resumes from b2 and resends b2 and b3.
    welcome = t.open(Hello("vpg-1", "protect-a", b2.first_seq))
    assert welcome.durable_seq == 8
    t.send(b2).result(10)
    assert t.send(b3).result(10).durable_seq == 12
    assert [r.seq for r in stored(recovery)] == list(range(1, 13))
    assert [r.data for r in stored(recovery)] == [w.data for w in writes(1, 12)]


def test_bad_checksum_is_refused_then_resent(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    good = seal("vpg-1", writes(1, 4))
    bad = dataclasses.replace(good, crc32c=good.crc32c ^ 1)
    with pytest.raises(Refused) as err:
        t.send(bad).result(10)
    assert err.value.reason == BAD_CHECKSUM and err.value.kind == "resend"
    assert stored(recovery) == []
    welcome = t.open(Hello("vpg-1", "protect-a", 1))
    assert welcome.durable_seq == 0
    t.send(good).result(10)
    assert [r.data for r in stored(recovery)] == [w.data for w in writes(1, 4)]
    assert recovery.receivers[0].counters["bad_checksum"] == 1


def test_corrupt_payload_is_refused(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    good = seal("vpg-1", writes(1, 4))
    flipped = bytearray(good.payload)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(Refused) as err:
        t.send(dataclasses.replace(good, payload=bytes(flipped))).result(10)
    assert err.value.reason == BAD_CHECKSUM


def test_unknown_vpg_is_refused(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    with pytest.raises(Refused) as err:
        make_transport().open(Hello("vpg-nope", "protect-a", 0))
    assert err.value.reason == UNKNOWN_VPG and err.value.kind == "permanent"


def test_unpaired_peer_is_refused(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1", paired=("protect-a",))
    with pytest.raises(Refused) as err:
        make_transport("protect-z").open(Hello("vpg-1", "protect-z", 0))
    assert err.value.reason == UNPAIRED_PEER
    with pytest.raises(Refused) as err:
        make_transport("protect-a", secret="wrong").open(Hello("vpg-1", "protect-a", 0))
    assert err.value.reason == UNPAIRED_PEER


def test_gap_is_refused(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    with pytest.raises(Refused) as err:
        t.send(seal("vpg-1", writes(3, 2))).result(10)
    assert err.value.reason == GAP
    with pytest.raises(Refused) as err:
        t.open(Hello("vpg-1", "protect-a", 7))
    assert err.value.reason == GAP


def test_full_journal_pushes_back_and_keeps_what_was_acked(recovery, make_transport) -> None:
    rx = recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    t.send(seal("vpg-1", writes(1, 4))).result(10)
    before = stored(recovery)
    recovery.journal.set_hard_limit("vpg-1", recovery.journal.size_bytes("vpg-1") + 1000)
    with pytest.raises(Refused) as err:
        t.send(seal("vpg-1", writes(5, 4))).result(10)
    assert err.value.reason == JOURNAL_FULL and err.value.kind == "backoff"
    assert rx.status()["state"] == "journal-full"
    assert stored(recovery) == before
    recovery.journal.set_hard_limit("vpg-1", None)
    assert t.open(Hello("vpg-1", "protect-a", 5)).durable_seq == 4
    t.send(seal("vpg-1", writes(5, 4))).result(10)
    assert [r.data for r in stored(recovery)] == [w.data for w in writes(1, 8)]
    assert rx.status()["state"] == "ok"


def test_single_peer_checkpoint_marker_is_journaled(recovery, make_transport) -> None:
    recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    recs = [*writes(1, 2), StreamMarker(3, 5_000, "cp-1", "before-upgrade", True, ("protect-a",)), *writes(4, 1)]
    t.send(seal("vpg-1", recs)).result(10)
    got = stored(recovery)
    assert [type(r).__name__ for r in got] == ["WriteRecord", "WriteRecord", "CheckpointRecord", "WriteRecord"]
    cp = got[2]
    assert isinstance(cp, CheckpointRecord)
    assert (cp.checkpoint_id, cp.tag, cp.consistent) == ("cp-1", "before-upgrade", True)
    assert [c.checkpoint_id for c in recovery.journal.checkpoints("vpg-1")] == ["cp-1"]


def test_close_fails_pending_futures(recovery, make_transport) -> None:
    recovery.start = False  # no committer: nothing is ever acknowledged
    recovery.add_vpg("vpg-1")
    t = make_transport()
    t.open(Hello("vpg-1", "protect-a", 0))
    fut = t.send(seal("vpg-1", writes(1, 2)))
    t.close()
    with pytest.raises(TransientError):
        fut.result(10)
