"""The split stream: framing through `SplitListener`, the filter's queue and its dirty-map fallback, and a
VRA process killed with SIGKILL under fio load (no IO error, nothing lost: replica + dirty extents =
source)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.iofilter.conftest import MiB, make_volume, nbd_uri, sha256
from tests.iofilter.nbdraw import RawNbd
from tests.iofilter.vra_stub import RecordingVra
from vra_appliance.iofilter import split_protocol as sp
from vra_appliance.iofilter.control import FilterControl
from vra_appliance.protect.split_listener import SplitListener


def raw_filter(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def read_ack(s: socket.socket) -> int:
    data = b""
    while len(data) < sp.HEADER.size:
        data += s.recv(sp.HEADER.size - len(data))
    magic, ftype, _, _, seq, length = sp.HEADER.unpack(data)
    assert (magic, ftype, length) == (sp.MAGIC, sp.ACK, 0)
    return seq


def test_frames_reach_the_handler_in_order_and_are_acknowledged(vra, sockdir):
    s = raw_filter(sockdir / "vra.sock")
    vol = b"vol-a"
    stream = (sp.encode_hello("f1", ["vol-a"], 7) + sp.write_prefix(vol, 7, 4096, 5) + b"hello"
              + sp.encode_zero(vol, 8, 8192, 1 << 20) + sp.encode_mark("cp-1", ["vol-a"], 9))
    s.sendall(stream)
    assert read_ack(s) == 9
    s.close()
    assert vra.wait_for(lambda ev: ev[-1][0] == "disconnect")
    assert vra.events == [("hello", "f1", ["vol-a"]), ("write", "vol-a", 4096, b"hello", 7),
                          ("zero", "vol-a", 8192, 1 << 20, 8), ("mark", "cp-1", ["vol-a"]), ("disconnect", "f1")]


def test_zero_frames_become_writes_for_a_handler_without_on_zero(sockdir):
    class WritesOnly:
        def __init__(self):
            self.writes = []

        def on_hello(self, *a): pass
        def on_mark(self, *a): pass
        def on_disconnect(self, *a): pass

        def on_write(self, filter_id, volume_id, offset, data, filter_seq):
            self.writes.append((offset, len(data), data.count(0), filter_seq))

    handler = WritesOnly()
    listener = SplitListener(str(sockdir / "v.sock"), handler)
    listener.start()
    try:
        s = raw_filter(sockdir / "v.sock")
        s.sendall(sp.encode_hello("f", ["v"], 1) + sp.encode_zero(b"v", 1, 100, 9 * MiB))
        assert read_ack(s) == 1
        s.close()
    finally:
        listener.stop()
    assert handler.writes == [(100, 4 * MiB, 4 * MiB, 1), (100 + 4 * MiB, 4 * MiB, 4 * MiB, 1),
                              (100 + 8 * MiB, MiB, MiB, 1)]


@pytest.mark.parametrize("garbage", [b"\x00" * 40, sp.HEADER.pack(sp.MAGIC, sp.WRITE, 0, 5, 1, 6) + b"x" * 6,
                                     sp.HEADER.pack(sp.MAGIC, 9, 0, 0, 1, 0)])
def test_a_broken_filter_is_dropped_and_others_go_on(vra, sockdir, garbage):
    bad = raw_filter(sockdir / "vra.sock")
    bad.sendall(sp.encode_hello("bad", [], 1) + garbage)
    assert bad.recv(100) == b""  # dropped (possibly after an ACK of nothing: none was handled)
    good = raw_filter(sockdir / "vra.sock")
    good.sendall(sp.encode_hello("good", ["v"], 1) + sp.write_prefix(b"v", 1, 0, 3) + b"abc")
    assert read_ack(good) == 1
    good.close()
    bad.close()
    assert vra.wait_for(lambda ev: ("disconnect", "good") in ev and ("disconnect", "bad") in ev)


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_writes_through_the_filter_are_split_in_completion_order(make_filter, vra, sockdir, ring):
    filt = make_filter(vra=str(sockdir / "vra.sock"), ring=ring)
    assert filt.splitter.wait_connected(5)
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    blobs = [os.urandom(4096 + i) for i in range(20)]
    for i, blob in enumerate(blobs):
        assert c.write(i * 65536, blob) == 0
    assert c.command(6, 5 * MiB, 12345) == 0  # WRITE_ZEROES
    c.disconnect()
    assert filt.splitter.wait_drained(5)
    writes = [e for e in vra.events if e[0] in ("write", "zero")]
    assert [(e[1], e[2], e[3]) for e in writes[:20]] == [("vol-a", i * 65536, b) for i, b in enumerate(blobs)]
    assert writes[20][:4] == ("zero", "vol-a", 5 * MiB, 12345)
    assert [e[4] for e in writes] == list(range(1, 22))
    assert vra.events[0] == ("hello", "test-filter-0", ["vol-a"])
    assert filt.splitter.snapshot()["transport"] == ("ring" if ring else "socket")
    assert not filt.dirty


def test_no_vra_means_dirty_map_then_a_vra_attaches(make_filter, sockdir):
    filt = make_filter(vra=str(sockdir / "late.sock"))
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    assert c.write(0, b"a" * 4096) == 0
    assert c.write(MiB, b"b" * 100) == 0
    ctl = FilterControl(filt.control_path)
    assert ctl.counters()["vra"] == "disconnected"
    assert ctl.dirty("vol-a")["extents"] == [[0, 4096], [MiB, 100]]
    handler = RecordingVra()
    listener = SplitListener(str(sockdir / "late.sock"), handler)
    listener.start()
    try:
        assert filt.splitter.wait_connected(10)
        assert c.write(2 * MiB, b"c" * 10) == 0
        assert filt.splitter.wait_drained(5)
        # seqs 1 and 2 went to the dirty map: the VRA sees the gap
        assert handler.events == [("hello", "test-filter-0", ["vol-a"]), ("write", "vol-a", 2 * MiB, b"c" * 10, 3)]
        assert ctl.dirty("vol-a", clear=True)["extents"] == [[0, 4096], [MiB, 100]]
        assert ctl.dirty("vol-a")["extents"] == []
    finally:
        c.disconnect()
        ctl.close()
        filt.stop()
        listener.stop()


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_a_stuck_vra_never_stalls_the_vm(make_filter, sockdir, ring):
    """The VRA's handler blocks: the VM's writes still complete, the queue stays within its budget and the
    overflow is in the dirty map. Every write is either split or dirty."""
    gate = threading.Event()
    handler = RecordingVra(gate=gate)
    listener = SplitListener(str(sockdir / "slow.sock"), handler)
    listener.start()
    try:
        filt = make_filter(vra=str(sockdir / "slow.sock"), queue_bytes=256 * 1024, ring=ring)
        assert filt.splitter.wait_connected(5)
        c = RawNbd(str(filt.unix_path))
        c.connect_export("vol-a")
        for i in range(1024):  # 4 MiB through a 256 KiB queue, with the VRA not reading at all
            assert c.write(i * 4096, b"%04d" % i * 1024) == 0
        snap = filt.splitter.snapshot()
        assert snap["queue_bytes"] <= 256 * 1024
        assert snap["diverted_writes"] > 0
        gate.set()
        assert filt.splitter.wait_drained(10)
        split = {e[2] for e in handler.events if e[0] == "write"}
        for i in range(1024):
            assert i * 4096 in split or filt.dirty.covers("vol-a", i * 4096, 4096)
        c.disconnect()
    finally:
        gate.set()
        listener.stop()


def start_vra_process(address: str, replica, stall_after: int | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tests.iofilter.vra_stub", address, str(replica)]
    if stall_after is not None:
        argv.append(str(stall_after))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    first = proc.stdout.readline().strip()
    if first != "listening":
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the VRA stub said {first!r} before 'listening'")
    return proc


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_killing_the_vra_under_fio_load_loses_nothing(make_filter, sockdir, tmp_path, ring):
    filt = make_filter(vra=str(sockdir / "vra-proc.sock"), size=16 * MiB, ring=ring)
    source = filt.volume_paths["vol-a"]
    replica = tmp_path / "replica.img"
    shutil.copyfile(source, replica)  # the initial sync
    first = start_vra_process(str(sockdir / "vra-proc.sock"), replica)
    second = None
    try:
        assert filt.splitter.wait_connected(10)
        fio = subprocess.Popen(["fio", "--name=load", "--ioengine=nbd", f"--uri={nbd_uri(filt.unix_path, 'vol-a')}",
                                "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=16M", "--time_based",
                                "--runtime=3", "--output-format=json"], stdout=subprocess.PIPE, text=True)
        assert first.stdout.readline().startswith("hello")
        assert first.stdout.readline().strip() == "writes 1000"  # under load now
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start_vra_process(str(sockdir / "vra-proc.sock"), replica)
        out, _ = fio.communicate(timeout=60)
        assert fio.returncode == 0
        job = json.loads(out[out.index("{"):])["jobs"][0]
        assert job["error"] == 0 and job["write"]["total_ios"] > 1000
        print("fio max completion latency across the kill: %.1f ms" % (job["write"]["clat_ns"]["max"] / 1e6))
        assert filt.splitter.wait_connected(10) and filt.splitter.wait_drained(10)
        with FilterControl(filt.control_path) as ctl:
            counters = ctl.counters()
            extents = ctl.dirty("vol-a", clear=True)["extents"]
        # at least: the first VRA, then the second (a reconnect can also land in the dying listener's backlog)
        assert counters["disconnects"] >= 1 and counters["connects"] >= 2 and counters["errors"] == 0
        assert extents  # what the dead VRA had not acknowledged, and what came while none was attached
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait()
            if proc is not None:
                proc.stdout.close()
    # bitmap sync: resend the dirty extents from the source; then the replica must equal the source
    with open(source, "rb") as src, open(replica, "r+b") as dst:
        for offset, length in extents:
            src.seek(offset)
            dst.seek(offset)
            dst.write(src.read(length))
    assert sha256(replica) == sha256(source)


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_the_filter_under_fio_verify_while_splitting(make_filter, vra, sockdir, ring):
    from tests.iofilter.test_nbd_clients import fio_verify

    filt = make_filter(vra=str(sockdir / "vra.sock"), ring=ring)
    assert filt.splitter.wait_connected(5)
    job = fio_verify(nbd_uri(filt.unix_path, "vol-a"), "8M")
    assert job["read"]["total_ios"] == 2048
    assert filt.splitter.wait_drained(5)
    assert sum(1 for e in vra.events if e[0] == "write") == 2048
    assert not filt.dirty


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "socket"])
def test_replica_from_the_stream_equals_the_source(make_filter, vra, sockdir, tmp_path, ring):
    """qemu-img writes a whole image (data, zero runs) through the filter; replaying the split stream on a
    copy of the old content gives exactly the new content."""
    filt = make_filter(vra=str(sockdir / "vra.sock"), ring=ring)
    source = filt.volume_paths["vol-a"]
    replica = bytearray(source.read_bytes())
    new = make_volume(tmp_path / "new.img", 8 * MiB, 9)
    with open(new, "r+b") as fh:
        fh.seek(MiB)
        fh.write(bytes(2 * MiB))
    assert filt.splitter.wait_connected(5)
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(new), nbd_uri(filt.unix_path, "vol-a")],
                   check=True, capture_output=True, timeout=60)
    assert filt.splitter.wait_drained(5)
    for event in vra.events:
        if event[0] == "write":
            replica[event[2]:event[2] + len(event[3])] = event[3]
        elif event[0] == "zero":
            replica[event[2]:event[2] + event[3]] = bytes(event[3])
    assert sha256(new) == sha256(source)
    import hashlib
    assert hashlib.sha256(replica).hexdigest() == sha256(source)


def test_a_handler_that_accepts_views_gets_the_same_bytes(sockdir):
    class Viewer(RecordingVra):
        accepts_views = True

        def on_write(self, filter_id, volume_id, offset, data, filter_seq):
            assert isinstance(data, memoryview)
            super().on_write(filter_id, volume_id, offset, bytes(data), filter_seq)

    handler = Viewer()
    listener = SplitListener(str(sockdir / "views.sock"), handler)
    listener.start()
    try:
        s = raw_filter(sockdir / "views.sock")
        blob = os.urandom(70000)
        s.sendall(sp.encode_hello("f", ["v"], 1) + sp.write_prefix(b"v", 1, 5, len(blob)) + blob)
        assert read_ack(s) == 1
        s.close()
        assert handler.wait_for(lambda ev: ev[-1][0] == "disconnect")
    finally:
        listener.stop()
    assert handler.events[1] == ("write", "v", 5, blob, 1)


def test_a_vra_that_drops_every_connection_gets_backoff_not_a_busy_loop(sockdir):
    from vra_appliance.iofilter.dirty_map import DirtyMap
    from vra_appliance.iofilter.splitter import Splitter

    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(sockdir / "rude.sock"))
    lsock.listen(64)
    lsock.settimeout(0.5)
    splitter = Splitter("f", ["v"], str(sockdir / "rude.sock"), DirtyMap(), retry_s=(0.05, 2.0))
    splitter.start()
    accepted = 0
    try:
        while True:  # backoff 0.05 + 0.1 + 0.2 + 0.4 > 0.5 s: the accepts dry up well before 10
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                break
            conn.close()
            accepted += 1
            assert accepted < 10, "the splitter reconnects in a busy loop"
    finally:
        splitter.stop(0)
        lsock.close()
    assert accepted >= 2
