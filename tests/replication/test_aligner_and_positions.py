"""The pure cores of the recovery side: checkpoint alignment across streams, and the positions log that
keeps each protect VRA's durable stream seq next to the journal."""

from __future__ import annotations

import hashlib
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from vra_appliance.recover import CheckpointRecord, WriteRecord
from vra_appliance.recover.filejournal import FileJournal
from vra_appliance.recover.service.positions import PositionsLog, replay
from vra_appliance.recover.service.receiver import VpgReceiver
from vra_appliance.stream.aligner import Aligner, Checkpoint, Dropped, Item, Mark
from vra_appliance.stream.transport import Hello
from vra_appliance.stream.wire import StreamMarker, StreamWrite, seal


@st.composite
def schedules(draw):
    """Two inputs, each: writes and the marks of checkpoints 0..n-1 in order; an interleaving of pushes;
    when each checkpoint is decided (or aborted)."""
    n_cp = draw(st.integers(0, 4))
    inputs = {}
    for name in ("x", "y"):
        seq = []
        for c in range(n_cp + 1):
            seq += [("w", name, f"{name}{c}.{i}") for i in range(draw(st.integers(0, 3)))]
            if c < n_cp:
                seq.append(("m", name, c))
        inputs[name] = seq
    order = draw(st.permutations(["x"] * len(inputs["x"]) + ["y"] * len(inputs["y"])))
    aborted = draw(st.sets(st.integers(0, max(0, n_cp - 1)), max_size=n_cp)) if n_cp else set()
    decide_at = [draw(st.integers(0, len(order))) for _ in range(n_cp)]
    pops = draw(st.sets(st.integers(0, len(order))))
    return n_cp, inputs, order, aborted, decide_at, pops


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_alignment_places_each_checkpoint_between_the_before_and_after_of_every_stream(schedule) -> None:
    n_cp, inputs, order, aborted, decide_at, pops = schedule
    a = Aligner()
    out = []
    pos = dict.fromkeys(inputs, 0)
    for step in range(len(order) + 1):
        for c in range(n_cp):
            if decide_at[c] == step:
                a.abort(f"c{c}") if c in aborted else a.decide(f"c{c}", {"x", "y"}, c)
        if step in pops:
            out += a.pop()
        if step < len(order):
            name = order[step]
            kind, _, value = inputs[name][pos[name]]
            pos[name] += 1
            a.push(name, Mark(f"c{value}") if kind == "m" else value)
    out += a.pop()
    writes = [o.value for o in out if isinstance(o, Item)]
    for name, seq in inputs.items():
        assert [w for w in writes if w.startswith(name)] == [v for k, _, v in seq if k == "w"]
    cps = [o.checkpoint_id for o in out if isinstance(o, Checkpoint)]
    assert cps == [f"c{c}" for c in range(n_cp) if c not in aborted]
    dropped = sorted((o.input_id, o.mark.checkpoint_id) for o in out if isinstance(o, Dropped))
    assert dropped == sorted((n, f"c{c}") for n in inputs for c in aborted)
    for o_index, o in enumerate(out):
        if not isinstance(o, Checkpoint):
            continue
        c = int(o.checkpoint_id[1:])
        before = {w for i, w in enumerate(out[:o_index]) if isinstance(w, Item)}
        for name, seq in inputs.items():
            mark_at = seq.index(("m", name, c))
            assert {v for k, _, v in seq[:mark_at] if k == "w"} <= {w.value for w in before}
            assert not {v for k, _, v in seq[mark_at:] if k == "w"} & {w.value for w in before}
    assert a.pending() == 0


def test_abandoned_after_a_timeout() -> None:
    a = Aligner()
    a.push("x", Mark("c1"), now=0.0)
    a.push("x", "w1", now=0.0)
    a.decide("c1", {"x", "y"})  # y never gets there
    assert a.pop(now=1.0) == []
    assert a.expire(now=5.0, max_blocked=10.0) == []
    assert a.expire(now=11.0, max_blocked=10.0) == ["c1"]
    assert [type(o).__name__ for o in a.pop(now=11.0)] == ["Dropped", "Item"]
    a.push("y", Mark("c1"))  # late: dropped too
    assert [type(o).__name__ for o in a.pop()] == ["Dropped"]


def test_replay_stops_at_the_journal_and_skips_aborted_entries() -> None:
    docs = [
        {"n": 0, "s": 1, "g": [["w", "a", 3], ["c", ["a", "b"]], ["w", "b", 2]]},  # seqs 1..6
        {"n": 1, "s": 7, "g": [["d", "b"], ["w", "a", 2]]},  # aborted: the journal was full
        {"abort": 1},
        {"n": 2, "s": 7, "g": [["w", "a", 2], ["d", "b"], ["w", "b", 4]]},  # seqs 7..12, crash after 9
    ]
    assert replay(docs, 9) == ({"a": 6, "b": 5}, 3)
    assert replay(docs, 12)[0] == {"a": 6, "b": 8}
    assert replay(docs, 3)[0] == {"a": 3}
    assert replay(docs[:1], 4)[0] == {"a": 4, "b": 1}
    # after a crash at seq 4 the restarted receiver wrote entry 1 from seq 5: entry 0 ends at 4
    restarted = [docs[0], {"n": 1, "s": 5, "g": [["w", "b", 3]]}]
    assert replay(restarted, 7)[0] == {"a": 4, "b": 4}


def test_positions_log_survives_a_torn_frame_and_compaction(tmp_path) -> None:
    path = tmp_path / "p.positions"
    log = PositionsLog(path, 0)
    log.begin(1, [("w", "a", 2)])
    log.commit(1, [("w", "a", 2)])
    log.begin(3, [("w", "b", 5)])
    log.close()
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")  # a frame cut short by a crash
    assert PositionsLog(path, 7).positions == {"a": 2, "b": 5}
    log = PositionsLog(path, 4)  # the crash left seqs 3 and 4 of the second append
    assert log.positions == {"a": 2, "b": 2}
    log.begin(5, [("c", ("a", "b"))])
    log.commit(5, [("c", ("a", "b"))])
    log.close()
    # seq 5 is the checkpoint of the entry written after the restart, not b's third write
    assert PositionsLog(path, 5).positions == {"a": 3, "b": 3}
    log = PositionsLog(path, 5)
    log.COMPACT_BYTES = 1
    assert log.maybe_compact()
    log.begin(6, [("d", "a"), ("w", "b", 1)])
    log.commit(6, [("d", "a"), ("w", "b", 1)])
    log.close()
    assert PositionsLog(path, 6).positions == {"a": 4, "b": 4}


def _w(seq: int, vol: str) -> StreamWrite:
    return StreamWrite(seq, time.time_ns(), vol, seq * 512, hashlib.sha256(b"%s%d" % (vol.encode(), seq)).digest() * 16)


def test_receiver_restart_resumes_each_peer_where_its_stream_is_durable(tmp_path) -> None:
    """Two protect VRAs, one journal. After a restart each peer's Welcome says its own durable seq, and
    resending what it had sent appends nothing twice."""
    acks: dict[str, int] = {}

    def open_rx():
        journal = FileJournal(tmp_path / "journal")
        rx = VpgReceiver("vpg", journal, tmp_path / "journal" / "streams" / "vpg.positions", paired={"a", "b"})
        return journal, rx

    journal, rx = open_rx()
    sessions = {}
    for peer in ("a", "b"):
        sessions[peer] = rx.open_session(Hello("vpg", peer, 0), peer, lambda ack, p=peer: acks.__setitem__(p, ack.durable_seq),
                                         lambda exc: None)
    batches = {
        "a": [seal("vpg", [_w(1, "va"), _w(2, "va")]),
              seal("vpg", [StreamMarker(3, time.time_ns(), "cp", "", True, ("a", "b")), _w(4, "va")])],
        "b": [seal("vpg", [_w(1, "vb")]), seal("vpg", [_w(2, "vb"), StreamMarker(3, time.time_ns(), "cp", "", True, ("a", "b"))])],
    }
    for i in range(2):
        for peer in ("a", "b"):
            sessions[peer].submit(batches[peer][i])
        while rx.sync_once():
            pass
    assert acks == {"a": 4, "b": 3}
    before = list(journal.read("vpg", 1))
    assert [type(r).__name__ for r in before].count("CheckpointRecord") == 1
    cp = next(r for r in before if isinstance(r, CheckpointRecord))
    # every write of either peer that came before its marker is before the checkpoint record
    assert {(r.volume, r.offset) for r in before[: cp.seq - 1]} == {("va", 512), ("va", 1024), ("vb", 512), ("vb", 1024)}
    rx.stop()
    journal.close()

    journal, rx = open_rx()
    for peer, durable in (("a", 4), ("b", 3)):
        s = rx.open_session(Hello("vpg", peer, 1), peer, lambda ack: None, lambda exc: None)
        assert s.welcome.durable_seq == durable
        for b in batches[peer]:
            s.submit(b)
    while rx.sync_once():
        pass
    assert list(journal.read("vpg", 1)) == before
    assert all(isinstance(r, WriteRecord | CheckpointRecord) for r in before)
    rx.stop()
    journal.close()
