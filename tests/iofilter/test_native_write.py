"""The compiled write path (vra_appliance/iofilter/native/zwrite.c) at its edges, through real NBD requests:
writes straddling the split ring's wrap, a full ring overflowing into the dirty map, a client dropping in
the middle of a payload, a write past the end, a malformed request header, and a filter that cannot build
the library. (Freeze holds on this path: tests/iofilter/test_freeze_control.py; write order across
connections: tests/faults/test_write_order.py.)"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

from tests.iofilter.nbdraw import RawNbd
from tests.iofilter.vra_stub import RecordingVra
from vra_appliance.iofilter import nbd_proto as p
from vra_appliance.iofilter import split_ring
from vra_appliance.iofilter import splitter as splitter_module
from vra_appliance.protect.split_listener import SplitListener

KiB, MiB = 1024, 1024 * 1024



def pipelined_writes(client: RawNbd, writes: list[tuple[int, bytes]]) -> list[int]:
    """Send every write at once (a thread reads the replies meanwhile); returns the error of each."""
    errors: dict[int, int] = {}

    def replies() -> None:
        for _ in writes:
            error, handle = client.simple_reply()
            errors[handle] = error

    reader = threading.Thread(target=replies)
    reader.start()
    client.sock.sendall(b"".join(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, i + 1, offset, len(data)) + data
                                 for i, (offset, data) in enumerate(writes)))
    reader.join(60)
    return [errors.get(i + 1, -1) for i in range(len(writes))]


def test_writes_straddle_the_ring_wrap_and_a_full_ring_overflows_into_the_dirty_map(make_filter, vra, sockdir,
                                                                                 monkeypatch):
    """A 64 KiB ring (1,024 REF frames) behind 6,000 pipelined writes from two connections, with a VRA that
    reads in bursts (it naps between them): the ring wraps (PAD frames) and may fill. Every write either
    reached the VRA in seq order with its bytes, or is in the dirty map: replica plus dirty extents resent
    equals the volume."""
    monkeypatch.setattr(splitter_module, "ring_shape", lambda queue_bytes: (64 * KiB, 4))
    filt = make_filter(vra=str(sockdir / "vra.sock"), size=16 * MiB)
    assert filt.splitter.wait_connected(5)
    source = filt.volume_paths["vol-a"]
    replica = bytearray(source.read_bytes())
    rng = random.Random(11)
    clients = [RawNbd(str(filt.unix_path)) for _ in range(2)]
    for c in clients:
        c.connect_export("vol-a")
    ring = filt.splitter._ring
    for _ in range(3):
        loads = [[(rng.randrange(0, 16 * MiB // 512 - 16) * 512, rng.randbytes(rng.choice((512, 4096, 8192))))
                  for _ in range(1000)] for _ in clients]
        results: list = []
        threads = [threading.Thread(target=lambda c=c, w=w, out=results: out.append(pipelined_writes(c, w)))
                   for c, w in zip(clients, loads, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 2 and all(e == 0 for r in results for e in r)
    assert filt.splitter.wait_drained(20)
    snap = filt.splitter.snapshot()
    assert ring.z.head > 4 * ring.size  # around the ring several times
    assert snap["frames_in_place"] > 1000  # published by the compiled loop, read where the kernel put them
    writes = [e for e in vra.events if e[0] == "write"]
    assert [e[4] for e in writes] == sorted(e[4] for e in writes)
    for _kind, _vol, offset, data, _seq in writes:
        replica[offset:offset + len(data)] = data
    extents = filt.dirty.extents("vol-a") if snap["diverted_writes"] else []
    data = source.read_bytes()
    for offset, length in extents:
        replica[offset:offset + length] = data[offset:offset + length]
    assert bytes(replica) == data


def test_a_client_that_drops_in_the_middle_of_a_payload_writes_nothing(make_filter, sockdir):
    vra = RecordingVra()
    listener = SplitListener(str(sockdir / "vra.sock"), vra)
    listener.start()
    try:
        filt = make_filter(vra=str(sockdir / "vra.sock"))
        assert filt.splitter.wait_connected(5)
        before = filt.volume_paths["vol-a"].read_bytes()
        c = RawNbd(str(filt.unix_path))
        c.connect_export("vol-a")
        assert c.write(0, b"whole") == 0
        c.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 99, 64 * KiB, 256 * KiB) + b"x" * 100_000)
        c.close()
        other = RawNbd(str(filt.unix_path))
        other.connect_export("vol-a")
        assert other.write(4096, b"after") == 0  # the filter goes on serving
        assert filt.splitter.wait_drained(5)
        after = filt.volume_paths["vol-a"].read_bytes()
        assert after[64 * KiB:320 * KiB] == before[64 * KiB:320 * KiB]
        assert [(e[2], e[3]) for e in vra.events if e[0] == "write"] == [(0, b"whole"), (4096, b"after")]
    finally:
        listener.stop()


def test_a_write_past_the_end_is_refused_and_the_connection_goes_on(make_filter, sockdir):
    filt = make_filter(size=1 * MiB)
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    before = filt.volume_paths["vol-a"].read_bytes()
    assert c.write(MiB - 100, b"z" * 4096) == p.NBD_ENOSPC
    assert c.write(2**64 - 512, b"z" * 4096) == p.NBD_ENOSPC  # offset + length overflows 64 bits
    assert c.write(MiB - 5, b"fits!") == 0
    assert filt.volume_paths["vol-a"].read_bytes() == before[:MiB - 5] + b"fits!"
    assert filt.counters()["writes"] == 1


def test_a_malformed_request_header_drops_only_that_connection(make_filter, sockdir):
    filt = make_filter()
    bad, good = RawNbd(str(filt.unix_path)), RawNbd(str(filt.unix_path))
    bad.connect_export("vol-a")
    good.connect_export("vol-a")
    assert bad.write(0, b"first") == 0
    bad.sock.sendall(p.REQUEST.pack(0x12345678, 0, p.CMD_WRITE, 1, 0, 4) + b"evil")
    assert bad.closed_by_server()
    assert good.write(0, b"still") == 0
    assert filt.volume_paths["vol-a"].read_bytes()[:5] == b"still"


def test_unknown_flags_on_a_write_are_refused_with_its_payload_skipped(make_filter):
    filt = make_filter()
    c = RawNbd(str(filt.unix_path))
    c.connect_export("vol-a")
    assert c.write(0, b"flagged", flags=1 << 9) == p.NBD_EINVAL
    assert c.write(0, b"fua", flags=p.CMD_FLAG_FUA) == 0
    assert filt.volume_paths["vol-a"].read_bytes()[:3] == b"fua"


def test_a_filter_without_a_compiler_refuses_to_start_saying_what_to_install(tmp_path):
    """No library in the cache and no compiler: the filter does not fall back to anything, it says what
    to install."""
    volume = tmp_path / "v.img"
    volume.write_bytes(bytes(MiB))
    env = {**os.environ, "ZVR_CACHE_DIR": str(tmp_path / "empty-cache"), "CC": "/nonexistent/gcc"}
    done = subprocess.run([sys.executable, "-m", "vra_appliance.cli", "iofilter", "--volume", f"v={volume}",
                           "--unix", str(tmp_path / "f.sock")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "apt-get install gcc libc6-dev" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "empty-cache" / "native").exists() or not list((tmp_path / "empty-cache").rglob("*.so"))


def test_the_library_is_built_once_per_source_and_flags(tmp_path, monkeypatch):
    from vra_appliance.iofilter import native

    monkeypatch.setenv("ZVR_CACHE_DIR", str(tmp_path))
    built = native.build()
    assert built.parent.name == native.key() and built.exists()
    stamp = built.stat().st_mtime_ns
    assert native.build() == built and built.stat().st_mtime_ns == stamp  # cached
    monkeypatch.setattr(native, "CFLAGS", (*native.CFLAGS, "-DZVR_TEST_FLAG=1"))
    assert native.build() != built  # other flags: another key


def test_ring_layout_constants_agree_with_python():
    """zwrite.c keeps its own copy of the ring's control-page indexes and frame types."""
    from vra_appliance.iofilter import native

    text = native.SOURCE.read_text()
    for name, value in (("CTL_HEAD", split_ring._HEAD), ("CTL_FRAMES_WRITTEN", split_ring._FRAMES_WRITTEN),
                        ("CTL_REWOUND_AT", split_ring._REWOUND_AT), ("CTL_TAIL", split_ring._TAIL),
                        ("CTL_TAIL_SEQ", split_ring._TAIL_SEQ), ("CTL_STATE", split_ring._STATE),
                        ("FRAME_PAD", split_ring.PAD), ("FRAME_REF", split_ring.REF),
                        ("REWIND_BYTES", split_ring.REWIND_BYTES), ("RING_ALIGN", split_ring.ALIGN)):
        assert f"#define {name} " in text
        defined = text.split(f"#define {name} ", 1)[1].split("\n", 1)[0].strip()
        assert eval(defined, {}) == value, name  # noqa: S307 (a constant expression from our own source)
