"""The shared-memory split ring: frames wrap around a small ring byte-exact, a full ring overflows into the
dirty map, writes received into slabs reach the VRA in place and a slab is not reused before the VRA read
it, a VRA killed with frames still in the ring loses nothing, MARKs keep their place, a sleeping VRA is
woken by a doorbell, older or declining VRAs get the socket stream, and a VRA that corrupts the ring's
counters makes the filter report its volumes unclean."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import threading
import time

import pytest

from tests.iofilter.conftest import MiB, held_vra, sha256
from tests.iofilter.nbdraw import RawNbd
from tests.iofilter.test_split import start_vra_process
from tests.iofilter.vra_stub import RecordingVra
from vra_appliance.errors import RingCorrupt
from vra_appliance.iofilter import split_protocol as sp
from vra_appliance.iofilter import split_ring
from vra_appliance.iofilter.control import FilterControl
from vra_appliance.iofilter.dirty_map import DirtyMap
from vra_appliance.iofilter.split_ring import RingReader, RingWriter
from vra_appliance.iofilter.splitter import Splitter
from vra_appliance.protect.split_listener import SplitListener


def ring_splitter(address, queue_bytes=64 * 1024, volumes=("v",), **kw) -> Splitter:
    splitter = Splitter("f", list(volumes), str(address), DirtyMap(), queue_bytes=queue_bytes, **kw)
    splitter.start()
    assert splitter.wait_connected(5)
    return splitter


def writes_of(events) -> list[tuple]:
    return [e for e in events if e[0] == "write"]


@pytest.mark.parametrize("rewind", [True, False], ids=["rewinding", "wrapping"])
def test_frames_wrap_around_a_small_ring_byte_exact(vra, sockdir, monkeypatch, rewind):
    """4 MiB of writes of random sizes through a 64 KiB ring: it wraps around (PAD frames; or, when it is
    empty, starts over at 0) again and again; every write arrives once, in order, with the same bytes."""
    if not rewind:
        monkeypatch.setattr(split_ring, "REWIND_BYTES", 0)
        monkeypatch.setattr(split_ring.RingWriter, "rewind", lambda self: None)
    splitter = ring_splitter(sockdir / "vra.sock")
    try:
        assert splitter.snapshot()["transport"] == "ring"
        rng = random.Random(7)
        sent, total = [], 0
        while total < 4 * MiB:
            batch, room = [], 20000
            while True:  # at most 20,000 bytes a batch: with the PAD of a wrap it still fits an empty ring
                n = rng.choice((1, 511, 4096, 5000, 12288, rng.randrange(1, 20000)))
                if n + 64 > room:
                    break
                data = rng.randbytes(n)
                batch.append(("v", len(sent) * 7, memoryview(bytearray(data))))
                sent.append(hashlib.sha256(data).hexdigest())
                room -= n + 64
                total += n
            splitter.submit_writes(batch)
            for _v, _o, view in batch:  # the views die with the batch, as the NBD receive buffer does
                view[:] = bytes(len(view))
            assert splitter.wait_drained(10)  # so nothing overflows into the dirty map
        snap = splitter.snapshot()
        assert snap["diverted_writes"] == 0 and not splitter.dirty
        assert snap["bytes_sent"] > 50 * 64 * 1024  # around the ring many times
    finally:
        splitter.stop(1)
    got = writes_of(vra.events)
    assert [e[4] for e in got] == list(range(1, len(sent) + 1))
    assert [e[2] for e in got] == [i * 7 for i in range(len(sent))]
    assert [hashlib.sha256(e[3]).hexdigest() for e in got] == sent


def test_a_full_ring_overflows_into_the_dirty_map(make_filter, sockdir):
    """The VRA's handler blocks: the VM's writes complete, the ring (256 KiB) fills, the rest goes to the
    dirty map; once the VRA goes on, every write is either in the stream or dirty, with a seq gap."""
    with held_vra(sockdir, make_filter, "slow") as (gate, handler, filt, c):
        for i in range(1024):  # 4 MiB through a 256 KiB ring, with the VRA not consuming
            assert c.write(i * 4096, b"%04d" % i * 1024) == 0
        with FilterControl(filt.control_path) as ctl:
            counters = ctl.counters()
        assert counters["transport"] == "ring" and counters["errors"] == 0
        assert 0 < counters["queue_bytes"] <= 256 * 1024 and counters["diverted_writes"] > 0
        gate.set()
        assert filt.splitter.wait_drained(10)
        got = writes_of(handler.events)
        for i in range(1024):
            assert i * 4096 in {e[2] for e in got} or filt.dirty.covers("vol-a", i * 4096, 4096)
        for e in got:
            assert e[3] == b"%04d" % (e[2] // 4096) * 1024
        seqs = [e[4] for e in got]
        assert seqs == list(range(1, len(seqs) + 1))
        assert c.write(0, b"later") == 0
        assert filt.splitter.wait_drained(10)
        assert handler.events[-1][2:] == (0, b"later", 1025)  # the dirty writes left a gap in the seqs
        c.disconnect()


def block(i: int, size: int = 65536) -> bytes:
    return random.Random(i).randbytes(size)


def test_slabs_stay_pinned_until_the_vra_read_them(make_filter, sockdir):
    """64 KiB writes received into slabs while the VRA does not consume: the slabs are pinned, then the
    connection falls back to private memory (its writes copied into the ring), then the ring is full and
    the rest is dirty; the VM never waits. Every write that reaches the VRA has its own bytes: no slab was
    refilled before the VRA read it."""
    gate = threading.Event()
    handler = RecordingVra(gate=gate)
    listener = SplitListener(str(sockdir / "slow.sock"), handler)
    listener.start()
    try:
        filt = make_filter(vra=str(sockdir / "slow.sock"), size=72 * MiB)
        assert filt.splitter.wait_connected(5)
        c = RawNbd(str(filt.unix_path))
        c.connect_export("vol-a")
        for i in range(1100):  # 68.75 MiB: more than the slabs (38, 1 MiB used of each) and the ring hold
            assert c.write(i * 65536, block(i)) == 0
        snap = filt.splitter.snapshot()
        assert snap["frames_in_place"] > 0 and snap["frames_sent"] > snap["frames_in_place"]
        assert snap["diverted_writes"] > 0
        gate.set()
        assert filt.splitter.wait_drained(30)
        for i in range(1100, 1120):  # slabs are free again: in place once more
            assert c.write(i * 65536, block(i)) == 0
        assert filt.splitter.wait_drained(30)
        assert filt.splitter.snapshot()["frames_in_place"] > snap["frames_in_place"]
        c.disconnect()
    finally:
        gate.set()
        listener.stop()
    got = {e[2] // 65536: e[3] for e in writes_of(handler.events)}
    for i in range(1120):
        if i in got:
            assert got[i] == block(i), f"write {i} reached the VRA with other bytes"
        else:
            assert filt.dirty.covers("vol-a", i * 65536, 65536)


def test_two_connections_receive_into_slabs_concurrently(make_filter, vra, sockdir):
    filt = make_filter(vra=str(sockdir / "vra.sock"), size=16 * MiB)
    assert filt.splitter.wait_connected(5)
    errors = []

    def writer(first: int) -> None:
        c = RawNbd(str(filt.unix_path))
        c.connect_export("vol-a")
        for i in range(first, first + 100):
            if c.write(i * 65536, block(i)) != 0:
                errors.append(i)
        c.disconnect()

    threads = [threading.Thread(target=writer, args=(first,)) for first in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and filt.splitter.wait_drained(10)
    got = writes_of(vra.events)
    assert [e[4] for e in got] == list(range(1, 201)) and not filt.dirty
    assert all(e[3] == block(e[2] // 65536) for e in got)
    assert filt.splitter.snapshot()["frames_in_place"] == 200


def test_writes_larger_than_a_slab_are_received_privately_and_copied(make_filter, vra, sockdir):
    filt = make_filter(vra=str(sockdir / "vra.sock"), size=16 * MiB)
    assert filt.splitter.wait_connected(5)
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    sizes = [65536, 3 * MiB, 4 * MiB, 65536, 2 * MiB + 17, 4096]
    offset = 0
    for i, n in enumerate(sizes):
        assert c.write(offset, block(i, n)) == 0
        offset += n
    c.disconnect()
    assert filt.splitter.wait_drained(10)
    got = writes_of(vra.events)
    assert [len(e[3]) for e in got] == sizes and not filt.dirty
    assert all(e[3] == block(i, n) for i, (e, n) in enumerate(zip(got, sizes, strict=True)))
    assert 0 < filt.splitter.snapshot()["frames_in_place"] < len(sizes)


def test_a_vra_killed_with_frames_in_the_ring_loses_nothing(make_filter, sockdir, tmp_path):
    """The VRA stops consuming after 50 writes, 150 more wait in the ring, then it is killed: no IO error,
    the unconsumed frames are in the dirty map, and replica + dirty extents resent = source."""
    filt = make_filter(vra=str(sockdir / "vra-proc.sock"))
    source = filt.volume_paths["vol-a"]
    replica = tmp_path / "replica.img"
    shutil.copyfile(source, replica)
    proc = start_vra_process(str(sockdir / "vra-proc.sock"), replica, stall_after=50)
    try:
        assert filt.splitter.wait_connected(10)
        assert proc.stdout.readline().startswith("hello")
        c = RawNbd(str(filt.unix_path))
        c.connect_export("vol-a")
        rng = random.Random(3)
        for _ in range(200):
            assert c.write(rng.randrange(0, 8 * MiB - 8192), rng.randbytes(rng.randrange(1, 8192))) == 0
        assert proc.stdout.readline().strip() == "stalled"
        with FilterControl(filt.control_path) as ctl:
            counters = ctl.counters()
            assert counters["transport"] == "ring" and counters["queue_frames"] >= 150
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert c.write(0, b"after the kill") == 0  # the VM notices nothing
            for _ in range(1000):  # the filter folds the unconsumed frames into the dirty map
                counters = ctl.counters()
                if counters["vra"] == "disconnected" and not counters["folding"]:
                    break
                threading.Event().wait(0.01)
            extents = ctl.dirty("vol-a", clear=True)["extents"]
        assert counters["errors"] == 0 and counters["disconnects"] >= 1 and extents
        # a new VRA: the connection still receives into a slab of the dead ring; its writes are copied
        second = start_vra_process(str(sockdir / "vra-proc.sock"), replica)
        try:
            assert filt.splitter.wait_connected(10)
            for i in range(20):
                assert c.write(MiB + i * 4096, b"%02d" % i * 2048) == 0
            assert filt.splitter.wait_drained(10)
        finally:
            second.terminate()
            second.wait()
            second.stdout.close()
        c.disconnect()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    with open(source, "rb") as src, open(replica, "r+b") as dst:
        for offset, length in extents:
            src.seek(offset)
            dst.seek(offset)
            dst.write(src.read(length))
    assert sha256(replica) == sha256(source)


def test_marks_keep_their_place_through_the_ring(make_filter, vra, sockdir):
    """A writer at QD1 and five freeze/thaw cycles: every write acknowledged before a freeze is ahead of its
    MARK, every write issued after the thaw behind it."""
    filt = make_filter(vra=str(sockdir / "vra.sock"))
    assert filt.splitter.wait_connected(5)
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    done, stop = [0], threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            assert c.write((i % 2048) * 4096, i.to_bytes(8, "big") * 512) == 0
            i += 1
            done[0] = i

    t = threading.Thread(target=writer)
    t.start()
    bounds = []
    try:
        with FilterControl(filt.control_path) as ctl:
            for k in range(5):
                while done[0] < (k + 1) * 200:
                    stop.wait(0.001)
                before = done[0]
                assert ctl.freeze(f"cp-{k}", ["vol-a"], timeout_ms=1000)["marked"]
                assert not ctl.thaw(f"cp-{k}")["expired"]
                bounds.append((before, done[0] + 1))  # the write after the one in progress now is issued later
        deadline = time.monotonic() + 10
        while done[0] <= bounds[-1][1] and time.monotonic() < deadline:  # writes behind the last MARK too
            stop.wait(0.001)
    finally:
        stop.set()
        t.join(10)
    assert filt.splitter.wait_drained(5) and filt.splitter.snapshot()["transport"] == "ring"
    order = [("mark", e[1]) if e[0] == "mark" else ("write", int.from_bytes(e[3][:8], "big"))
             for e in vra.events if e[0] in ("write", "mark")]
    for k, (before, after) in enumerate(bounds):
        at = order.index(("mark", f"cp-{k}"))
        ahead = {n for kind, n in order[:at] if kind == "write"}
        behind = {n for kind, n in order[at + 1:] if kind == "write"}
        assert set(range(before)) <= ahead  # acknowledged before the freeze: ahead of the MARK
        assert not any(n >= after for n in ahead)  # issued after the thaw: behind it
        assert behind


def test_a_sleeping_vra_is_woken_by_the_doorbell(sockdir, monkeypatch):
    """Once quiet, the VRA sleeps until a doorbell (here its safety timeout is a minute): a write wakes it."""
    monkeypatch.setattr(sp, "RING_QUIET_NAPS", 2)
    monkeypatch.setattr(sp, "RING_SLEEP_MS", 60_000)
    handler = RecordingVra()
    listener = SplitListener(str(sockdir / "bell.sock"), handler)
    listener.start()
    splitter = ring_splitter(sockdir / "bell.sock")
    try:
        splitter.submit_write("v", 0, b"first")
        assert handler.wait_for(lambda ev: len(writes_of(ev)) == 1)
        ring = splitter._ring
        for _ in range(2000):  # the VRA publishes its state in the ring; it sleeps after two empty naps
            if ring.bell_word() & 3 == split_ring.SLEEP:
                break
            threading.Event().wait(0.005)
        assert ring.bell_word() & 3 == split_ring.SLEEP
        splitter.submit_write("v", 4096, b"second")
        assert handler.wait_for(lambda ev: len(writes_of(ev)) == 2, timeout=30)
        assert splitter.mark("cp", ["v"])  # a MARK rings even for a napping VRA
        assert handler.wait_for(lambda ev: ev[-1][0] == "mark", timeout=30)
    finally:
        splitter.stop(1)
        listener.stop()


def test_a_doorbell_after_the_ring_was_detached_sends_nothing(sockdir, vra):
    """The connection breaks (the ring is detached under its lock) while a connection thread decides to
    ring: the doorbell is skipped (the socket may be closing), the VM's batch does not fail."""
    splitter = ring_splitter(sockdir / "vra.sock")
    try:
        ring = splitter._ring
        for _ in range(2000):  # the VRA naps or sleeps: a doorbell is due
            if ring.bell_word() & 3:
                break
            threading.Event().wait(0.005)
        assert ring.z.bell_fd >= 0
        ring.detach()
        ring.z.rang = -1
        ring.bell(True)
        assert ring.z.rang == -1  # nothing was rung
        ring.z.live = 1  # as it was, for the splitter's own stop
    finally:
        splitter.stop(1)


def test_a_handler_that_accepts_views_reads_the_ring_in_place(sockdir):
    class Viewer(RecordingVra):
        accepts_views = True

        def on_write(self, filter_id, volume_id, offset, data, filter_seq):
            assert isinstance(data, memoryview) and data.readonly
            super().on_write(filter_id, volume_id, offset, bytes(data), filter_seq)

    handler = Viewer()
    listener = SplitListener(str(sockdir / "views.sock"), handler)
    listener.start()
    splitter = ring_splitter(sockdir / "views.sock", queue_bytes=MiB)
    try:
        blob = os.urandom(70000)
        splitter.submit_writes([("v", 5, memoryview(blob))])
        assert splitter.wait_drained(5)
    finally:
        splitter.stop(1)
        listener.stop()
    assert writes_of(handler.events) == [("write", "v", 5, blob, 1)]


def test_a_vra_that_declines_the_ring_gets_the_socket_stream(sockdir):
    handler = RecordingVra()
    listener = SplitListener(str(sockdir / "plain.sock"), handler, accept_rings=False)
    listener.start()
    splitter = ring_splitter(sockdir / "plain.sock")
    try:
        assert splitter.snapshot()["transport"] == "socket"
        splitter.submit_writes([("v", 0, b"abc"), ("v", 10, b"defg")])
        assert splitter.wait_drained(5)
    finally:
        splitter.stop(1)
        listener.stop()
    assert [e[2:] for e in writes_of(handler.events)] == [(0, b"abc", 1), (10, b"defg", 2)]


def test_an_older_vra_that_never_answers_the_offer_gets_the_socket_stream(sockdir):
    """A VRA from before the ring reads HELLO (the descriptor is dropped) and never answers: after the connect
    timeout the filter sends frames on the socket; what it put into the ring meanwhile is dirty."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(sockdir / "old.sock"))
    lsock.listen(1)
    lsock.settimeout(10)
    splitter = Splitter("f", ["v"], str(sockdir / "old.sock"), DirtyMap(), connect_timeout_s=1.0)
    splitter.start()
    try:
        conn, _ = lsock.accept()
        conn.settimeout(10)
        hello = conn.recv(sp.HEADER.size)  # a plain recv, as an older VRA does: no descriptor taken
        _m, ftype, _f, _v, first_seq, length = sp.HEADER.unpack(hello)
        assert ftype == sp.HELLO and b'"ring"' in conn.recv(length)
        splitter.submit_write("v", 0, b"while offering")  # goes to the ring, later to the dirty map
        assert splitter.wait_connected(5)  # once the offer timed out
        assert splitter.snapshot()["transport"] == "socket"
        splitter.submit_write("v", 4096, b"on the socket")
        frame = conn.recv(sp.HEADER.size)
        _m, ftype, _f, vlen, seq, length = sp.HEADER.unpack(frame)
        body = b""
        while len(body) < length:
            body += conn.recv(length - len(body))
        assert (ftype, seq, body[vlen + 8:]) == (sp.WRITE, first_seq + 1, b"on the socket")
        conn.sendall(sp.encode_ack(seq))
        assert splitter.wait_drained(5)
        assert splitter.dirty.extents("v") == [(0, len(b"while offering"))]
        conn.close()
    finally:
        splitter.stop(0)
        lsock.close()


def test_a_vra_that_corrupts_the_ring_makes_every_volume_unclean(make_filter, sockdir):
    """A VRA that publishes a tail that is no frame boundary: the filter cannot tell which writes it missed,
    drops the connection and reports every volume unclean (a delta sync follows); the VM notices nothing."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(sockdir / "bad.sock"))
    lsock.listen(1)
    lsock.settimeout(10)
    filt = make_filter(vra=str(sockdir / "bad.sock"), volumes=("vol-a", "vol-b"))
    conn, _ = lsock.accept()
    try:
        conn.settimeout(10)
        buf = bytearray(4096)
        n, anc, _flags, _addr = conn.recvmsg_into([buf], socket.CMSG_SPACE(4))
        hello = json.loads(bytes(buf[sp.HEADER.size:n]))
        ring = RingReader(int.from_bytes(anc[0][2][:4], "little"), hello["ring"]["bytes"], hello["ring"]["data_bytes"])
        conn.sendall(sp.encode_accept(True))
        assert filt.splitter.wait_connected(5)
        c = RawNbd(str(filt.unix_path))
        c.connect_export("vol-a")
        assert c.write(0, b"x" * 4096) == 0
        ring.ctl[16] = 12345  # the consumer's tail: unaligned, past head
        conn.sendall(sp.encode_ack(1))
        assert c.write(8192, b"y" * 4096) == 0
        with FilterControl(filt.control_path) as ctl:
            for _ in range(1000):
                if ctl.status()["volumes"]["vol-b"]["unclean"]:
                    break
                threading.Event().wait(0.01)
            status = ctl.status()
            assert status["volumes"]["vol-a"]["unclean"] and status["volumes"]["vol-b"]["unclean"]
            assert ctl.counters()["errors"] == 0
        c.disconnect()
        ring.close()
    finally:
        conn.close()
        lsock.close()


def test_ring_reader_refuses_what_is_not_a_sealed_ring_of_the_offered_size():
    writer = RingWriter(64 * 1024)
    try:
        with pytest.raises(RingCorrupt, match="does not match"):
            RingReader(os.dup(writer.fd), 128 * 1024)
        fd = os.memfd_create("plain")
        os.ftruncate(fd, split_ring.CONTROL_BYTES + 64 * 1024)
        with pytest.raises(RingCorrupt, match="not sealed"):
            RingReader(fd, 64 * 1024)
        reader = RingReader(os.dup(writer.fd), 64 * 1024)
        assert reader.size == 64 * 1024
        reader.close()
    finally:
        writer.close()


def test_unconsumed_frames_are_what_the_writer_put_after_the_tail():
    writer = RingWriter(64 * 1024)
    try:
        assert writer.put_write(b"v", 1, 100, b"a" * 40000)
        assert writer.put_frame(sp.encode_zero(b"v", 2, 5000, 300))
        assert not writer.put_write(b"v", 3, 0, b"b" * 40000)  # no room: 40,000 + 40,000 > 64 KiB
        assert writer.put_frame(sp.encode_mark("cp", ["v"], 3))
        writer.publish()
        assert writer.unconsumed() == [(sp.WRITE, 1, "v", 100, 40000), (sp.ZERO, 2, "v", 5000, 300),
                                       (sp.MARK, 3, "", 0, 0)]
        writer._ctl[16] = writer._head  # the VRA consumed everything...
        assert writer.unconsumed() == []
        writer.rewind()  # ...so the ring starts over at 0 and the next write has all the room
        assert writer.put_write(b"v", 4, 0, b"c" * 60000)
        writer.publish()
        assert writer.unconsumed() == [(sp.WRITE, 4, "v", 0, 60000)]
        writer._ctl[16] = 64  # behind what the VRA already said
        with pytest.raises(RingCorrupt):
            writer.consumed()
    finally:
        writer.close()
