"""The NBD server at the byte level: handshake options, commands, and every kind of bad input.

After each bad input, the test checks that the server still serves (a fresh client can read the other
export) and, where data is involved, that the file's hash is what it must be.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading

import pytest

from tests.iofilter.conftest import MiB, sha256
from tests.iofilter.nbdraw import RawNbd
from vra_appliance.iofilter import nbd_proto as p
from vra_appliance.iofilter.nbd import NbdServer


def still_serving(served, export: str = "beta") -> None:
    """A fresh client reads the first MiB of ``export`` and gets the file's bytes."""
    c = RawNbd(str(served.sock))
    c.connect_export(export)
    error, data = c.read(0, MiB)
    c.disconnect()
    assert error == 0
    assert data == served.files[export].read_bytes()[:MiB]


# -- handshake ----------------------------------------------------------------------------------------------
def test_list_shows_every_export(served):
    c = RawNbd(str(served.sock))
    c.greet()
    c.option(p.OPT_LIST)
    replies = c.replies_until_final()
    names = sorted(data[4:].decode() for rtype, data in replies if rtype == p.REP_SERVER)
    assert names == ["alpha", "beta"]
    assert replies[-1][0] == p.REP_ACK


def test_info_reports_size_flags_and_block_sizes(served):
    c = RawNbd(str(served.sock))
    c.greet()
    replies = c.go("alpha", opt=p.OPT_INFO)
    assert replies[-1][0] == p.REP_ACK
    info = {struct.unpack_from(">H", d)[0]: d for t, d in replies if t == p.REP_INFO}
    _, size, flags = p.INFO_EXPORT_BODY.unpack(info[p.INFO_EXPORT])
    assert size == 8 * MiB
    for flag in (p.TFLAG_SEND_FLUSH, p.TFLAG_SEND_FUA, p.TFLAG_SEND_TRIM, p.TFLAG_SEND_WRITE_ZEROES):
        assert flags & flag
    assert p.INFO_BLOCK_SIZE_BODY.unpack(info[p.INFO_BLOCK_SIZE])[1:] == (1, 4096, p.MAX_PAYLOAD)
    # INFO does not end the haggling: GO on the same connection still works
    assert c.go("alpha")[-1][0] == p.REP_ACK
    error, data = c.read(4096, 4096)
    assert error == 0 and data == served.files["alpha"].read_bytes()[4096:8192]


def test_go_unknown_export_is_an_error_reply_and_haggling_goes_on(served):
    c = RawNbd(str(served.sock))
    c.greet()
    assert c.go("nope")[-1][0] == p.REP_ERR_UNKNOWN
    assert c.go("beta")[-1][0] == p.REP_ACK


def test_export_name_option_enters_transmission(served):
    c = RawNbd(str(served.sock))
    c.greet()
    c.option(p.OPT_EXPORT_NAME, b"alpha")
    size, flags = p.EXPORT_NAME_REPLY.unpack(c.recv_exact(p.EXPORT_NAME_REPLY.size))  # NO_ZEROES: no padding
    assert size == 8 * MiB and flags & p.TFLAG_HAS_FLAGS
    error, data = c.read(0, 512)
    assert error == 0 and data == served.files["alpha"].read_bytes()[:512]


def test_export_name_unknown_closes_the_connection(served):
    c = RawNbd(str(served.sock))
    c.greet()
    c.option(p.OPT_EXPORT_NAME, b"nope")
    assert c.closed_by_server()
    still_serving(served)


def test_abort_is_acknowledged(served):
    c = RawNbd(str(served.sock))
    c.greet()
    c.option(p.OPT_ABORT)
    assert c.option_reply()[1] == p.REP_ACK
    assert c.closed_by_server()


def test_unsupported_options_get_unsup(served):
    c = RawNbd(str(served.sock))
    c.greet()
    for opt in (p.OPT_STARTTLS, 0x7777):
        c.option(opt, b"\0\0\0\0")
        assert c.option_reply()[1] == p.REP_ERR_UNSUP
    c.option(p.OPT_LIST, b"junk")
    assert c.option_reply()[1] == p.REP_ERR_INVALID
    assert c.go("alpha")[-1][0] == p.REP_ACK


@pytest.mark.parametrize("bad", ["client_flags", "option_magic", "option_length", "garbage"])
def test_malformed_handshake_drops_only_that_client(served, bad):
    c = RawNbd(str(served.sock))
    if bad == "client_flags":
        c.greet(client_flags=0x80)
    elif bad == "option_magic":
        c.greet()
        c.option(p.OPT_LIST, magic=0x1234)
    elif bad == "option_length":
        c.greet()
        c.sock.sendall(p.OPTION_HEADER.pack(p.IHAVEOPT, p.OPT_GO, 1 << 30))
    else:
        c.recv_exact(p.HANDSHAKE.size)
        c.sock.sendall(os.urandom(3))
        c.sock.shutdown(socket.SHUT_WR)
    assert c.closed_by_server()
    still_serving(served)


def test_go_with_inconsistent_lengths_is_invalid(served):
    c = RawNbd(str(served.sock))
    c.greet()
    c.option(p.OPT_GO, struct.pack(">I", 500) + b"alpha" + struct.pack(">H", 0))
    assert c.option_reply()[1] == p.REP_ERR_INVALID
    c.option(p.OPT_GO, struct.pack(">I", 5) + b"alpha" + struct.pack(">H", 3) + b"\0\0")
    assert c.option_reply()[1] == p.REP_ERR_INVALID
    assert c.go("alpha")[-1][0] == p.REP_ACK


# -- transmission ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("structured", [False, True])
def test_write_read_flush_trim_zero(served, structured):
    expected = bytearray(served.files["alpha"].read_bytes())
    c = RawNbd(str(served.sock))
    c.connect_export("alpha", structured=structured)
    payload = os.urandom(3 * 4096 + 17)
    assert c.write(12345, payload) == 0
    assert c.write(1 * MiB, payload, flags=p.CMD_FLAG_FUA) == 0
    assert c.command(p.CMD_FLUSH) == 0
    assert c.read(12345, len(payload)) == (0, payload)
    assert c.command(p.CMD_TRIM, 2 * MiB, 64 * 1024) == 0
    assert c.command(p.CMD_WRITE_ZEROES, 3 * MiB + 1, 5000) == 0
    assert c.command(p.CMD_WRITE_ZEROES, 4 * MiB, 8192, flags=p.CMD_FLAG_NO_HOLE | p.CMD_FLAG_FUA) == 0
    assert c.read(3 * MiB, 8192) == (0, bytes(expected[3 * MiB:3 * MiB + 1]) + bytes(5000) +
                                     bytes(expected[3 * MiB + 5001:3 * MiB + 8192]))
    c.disconnect()
    # the file holds exactly the writes and zeroes; nothing else moved
    for off in (12345, MiB):
        expected[off:off + len(payload)] = payload
    for off, n in ((2 * MiB, 64 * 1024), (3 * MiB + 1, 5000), (4 * MiB, 8192)):
        expected[off:off + n] = bytes(n)
    assert sha256(served.files["alpha"]) == hashlib.sha256(expected).hexdigest()


def test_pipelined_requests_are_all_answered(served):
    """64 writes sent back to back before reading any reply (what fio at iodepth 64 does)."""
    c = RawNbd(str(served.sock))
    c.connect_export("alpha")
    blocks = [os.urandom(4096) for _ in range(64)]
    handles = [c.send_request(p.CMD_WRITE, i * 8192, 4096, data=b) for i, b in enumerate(blocks)]
    got = sorted(c.simple_reply() for _ in handles)
    assert got == [(0, h) for h in handles]
    data = served.files["alpha"].read_bytes()
    assert all(data[i * 8192:i * 8192 + 4096] == b for i, b in enumerate(blocks))


@pytest.mark.parametrize("structured", [False, True])
def test_out_of_range_requests_get_errors_and_change_nothing(served, structured):
    before = sha256(served.files["alpha"])
    c = RawNbd(str(served.sock))
    c.connect_export("alpha", structured=structured)
    end = 8 * MiB
    assert c.read(end - 10, 20)[0] == p.NBD_EINVAL
    assert c.read(2**63, 1)[0] == p.NBD_EINVAL
    assert c.write(end - 10, b"x" * 20) == p.NBD_ENOSPC
    assert c.command(p.CMD_TRIM, end, 1) == p.NBD_ENOSPC
    assert c.command(p.CMD_WRITE_ZEROES, end - 1, 2) == p.NBD_ENOSPC
    assert c.read(0, p.MAX_PAYLOAD + 1)[0] == p.NBD_EINVAL
    # unknown flags, a fast zero that was never advertised, commands not offered
    assert c.write(0, b"y" * 10, flags=1 << 9) == p.NBD_EINVAL
    assert c.command(p.CMD_WRITE_ZEROES, 0, 10, flags=p.CMD_FLAG_FAST_ZERO) == p.NBD_EINVAL
    for cmd in (p.CMD_CACHE, p.CMD_BLOCK_STATUS, 99):
        assert c.command(cmd, 0, 10) == p.NBD_EINVAL
    # the connection is still good
    assert c.read(0, 16)[0] == 0
    c.disconnect()
    assert sha256(served.files["alpha"]) == before


def test_oversized_write_payload_is_skipped_and_the_stream_stays_in_sync(served):
    before = sha256(served.files["alpha"])
    c = RawNbd(str(served.sock))
    c.connect_export("alpha")
    big = p.MAX_PAYLOAD + 4096
    c.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 77, 0, big) + b"z" * big)
    assert c.simple_reply() == (p.NBD_EINVAL, 77)
    assert c.read(0, 4096) == (0, served.files["alpha"].read_bytes()[:4096])
    c.disconnect()
    assert sha256(served.files["alpha"]) == before


def test_bad_request_magic_drops_the_connection(served):
    c = RawNbd(str(served.sock))
    c.connect_export("alpha")
    c.send_request(p.CMD_READ, 0, 16, magic=0xDEADBEEF)
    assert c.closed_by_server()
    still_serving(served)


def test_client_dropping_mid_write_writes_nothing(served):
    before = sha256(served.files["alpha"])
    c = RawNbd(str(served.sock))
    c.connect_export("alpha")
    c.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, 1, 4096, 65536) + b"q" * 30000)
    c.close()
    still_serving(served, "alpha")
    still_serving(served, "beta")
    assert sha256(served.files["alpha"]) == before


def test_many_clients_at_once_on_two_exports(served):
    """Eight clients write their own ranges concurrently; each range ends up exactly as written."""
    blobs = {(e, i): os.urandom(64 * 1024) for e in ("alpha", "beta") for i in range(4)}

    def client(export, i):
        c = RawNbd(str(served.sock))
        c.connect_export(export)
        for k in range(8):
            assert c.write(i * MiB + k * 64 * 1024, blobs[(export, i)]) == 0
        c.disconnect()

    threads = [threading.Thread(target=client, args=key) for key in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (export, i), blob in blobs.items():
        data = served.files[export].read_bytes()
        assert data[i * MiB:i * MiB + 8 * 64 * 1024] == blob * 8
    counters = served.server.counters()
    assert counters["alpha"]["writes"] == counters["beta"]["writes"] == 32
    assert counters["alpha"]["errors"] == 0


# -- the server API ------------------------------------------------------------------------------------------
class MemoryBackend:
    """An ExportBackend with none of the optional fast paths (the shape of a point-in-time image)."""

    def __init__(self, name: str, size: int, read_only: bool = False):
        self.name, self.size, self.read_only = name, size, read_only
        self.data = bytearray(size)
        self.closed = False
        self.kept: list = []

    def pread(self, offset, length):
        return bytes(self.data[offset:offset + length])

    def pwrite(self, offset, data, fua=False):
        self.kept.append(data)  # a backend that keeps what it is given must get bytes, not a view
        self.data[offset:offset + len(data)] = data

    def flush(self):
        pass

    def trim(self, offset, length):
        self.write_zeroes(offset, length)

    def write_zeroes(self, offset, length, may_trim=False):
        self.data[offset:offset + length] = bytes(length)

    def close(self):
        self.closed = True


def test_generic_backend_added_and_removed_while_running(served):
    mem = MemoryBackend("image@cp1", 2 * MiB)
    served.server.add_export(mem)
    c = RawNbd(str(served.sock))
    c.connect_export("image@cp1", structured=True)
    blob = os.urandom(10000)
    assert c.write(100, blob) == 0
    assert c.write(20000, os.urandom(4096)) == 0
    assert all(isinstance(k, bytes) for k in mem.kept)
    assert mem.kept[0] == blob
    assert c.read(100, len(blob)) == (0, blob)
    served.server.remove_export("image@cp1")
    assert mem.closed
    assert c.closed_by_server()
    c2 = RawNbd(str(served.sock))
    c2.greet()
    assert c2.go("image@cp1")[-1][0] == p.REP_ERR_UNKNOWN
    still_serving(served)


def test_read_only_backend_refuses_writes(sockdir):
    mem = MemoryBackend("ro", MiB, read_only=True)
    server = NbdServer({"ro": mem}, unix_path=sockdir / "ro.sock")
    server.start()
    try:
        c = RawNbd(str(sockdir / "ro.sock"))
        info = c.connect_export("")  # the empty name is the only export
        assert info["flags"] & p.TFLAG_READ_ONLY and not info["flags"] & p.TFLAG_SEND_TRIM
        assert c.write(0, b"x") == p.NBD_EPERM
        assert c.command(p.CMD_WRITE_ZEROES, 0, 10) == p.NBD_EPERM
        assert c.read(0, 4) == (0, bytes(4))
        c.disconnect()
    finally:
        server.stop()
    assert mem.data == bytearray(MiB)


def test_backend_errors_reach_the_client_as_errno(sockdir):
    class Failing(MemoryBackend):
        def pwrite(self, offset, data, fua=False):
            raise OSError(28, "no space")

        def pread(self, offset, length):
            raise OSError(5, "bad sector")

    server = NbdServer({"f": Failing("f", MiB)}, unix_path=sockdir / "f.sock")
    server.start()
    try:
        c = RawNbd(str(sockdir / "f.sock"))
        c.connect_export("f", structured=True)
        assert c.write(0, b"abc") == p.NBD_ENOSPC
        assert c.read(0, 10)[0] == p.NBD_EIO
        assert c.read(0, 10)[0] == p.NBD_EIO
        c.disconnect()
    finally:
        server.stop()
