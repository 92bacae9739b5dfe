"""NBD block status (``base:allocation``) of a protected volume, through the IO filter: real clients
(``nbdinfo --map``, ``qemu-img map``, ``nbdcopy``, ``qemu-img convert``) see the volume file's holes and
skip them; the negotiation and the command at the byte level, bad input included.

The recovery side's point-in-time images: tests/faults/test_block_status_images.py.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess

import pytest

from tests.iofilter.conftest import MiB, nbd_uri, sha256
from tests.iofilter.nbdraw import RawNbd
from vra_appliance.iofilter import block_status as bs
from vra_appliance.iofilter import nbd_proto as p

KiB = 1024
SIZE = 16 * MiB
DATA = [(640 * KiB, 192 * KiB), (4000 * KiB, 4 * KiB), (12 * MiB, 1 * MiB)]  # where the file holds data


def sparse_volume(path, data=DATA):
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for i, (offset, length) in enumerate(data):
            f.seek(offset)
            f.write(bytes([i + 1]) * length)
    return path


def expected_map(data=DATA) -> list[tuple[int, int, int]]:
    """(offset, length, flags) of every extent: the data ranges and the holes around them."""
    out, pos = [], 0
    for offset, length in data:
        if offset > pos:
            out.append((pos, offset - pos, bs.STATE_HOLE | bs.STATE_ZERO))
        out.append((offset, length, 0))
        pos = offset + length
    if pos < SIZE:
        out.append((pos, SIZE - pos, bs.STATE_HOLE | bs.STATE_ZERO))
    return out


def nbdinfo_map(uri: str) -> list[tuple[int, int, int]]:
    out = subprocess.run(["nbdinfo", "--map", uri], capture_output=True, text=True, timeout=60, check=True).stdout
    return [tuple(int(x) for x in line.split()[:3]) for line in out.splitlines() if line.strip()]


@pytest.fixture
def volume(make_filter, tmp_path):
    sparse_volume(tmp_path / "vol-a.img")
    filt = make_filter()
    return filt, tmp_path / "vol-a.img", nbd_uri(filt.unix_path, "vol-a")


def test_nbdinfo_map_lists_the_holes_of_the_volume_file(volume):
    _filt, _path, uri = volume
    assert nbdinfo_map(uri) == expected_map()
    described = subprocess.run(["nbdinfo", "--map", uri], capture_output=True, text=True, check=True).stdout
    assert "hole,zero" in described and "data" in described


def test_the_map_follows_writes_and_trims_through_the_filter(volume):
    _filt, path, uri = volume
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 2M 64k", "-c", "discard 12M 512k", uri],
                   check=True, capture_output=True, timeout=60)
    data = sorted([(2 * MiB, 64 * KiB), *DATA[:2], (12 * MiB + 512 * KiB, 512 * KiB)])
    assert nbdinfo_map(uri) == expected_map(data)
    out = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", uri], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    qemu = [(e["start"], e["length"], e["data"]) for e in json.loads(out)]
    assert qemu == [(o, n, f == 0) for o, n, f in expected_map(data)]


@pytest.mark.parametrize("copy", ["nbdcopy", "qemu-img"])
def test_copies_read_only_the_data_and_come_out_sparse(volume, tmp_path, copy):
    filt, path, uri = volume
    out = tmp_path / "copy.img"
    argv = ["nbdcopy", uri, str(out)] if copy == "nbdcopy" else ["qemu-img", "convert", "-f", "raw", "-O", "raw",
                                                                  uri, str(out)]
    before = filt.counters()["bytes_read"]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    data_bytes = sum(n for _, n in DATA)
    # without block status a copy reads all 16 MiB; with it, the data (qemu-img rounds to its clusters)
    assert filt.counters()["bytes_read"] - before <= data_bytes + 2 * MiB
    assert sha256(out) == sha256(path)
    assert os.stat(out).st_blocks * 512 <= data_bytes + 1 * MiB


# -- the protocol at the byte level ---------------------------------------------------------------------
def meta_data(export: str, *queries: bytes) -> bytes:
    name = export.encode()
    out = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    return out + b"".join(struct.pack(">I", len(q)) + q for q in queries)


def meta_replies(c: RawNbd) -> list[tuple[int, bytes]]:
    """The replies to a LIST/SET_META_CONTEXT, up to its ACK (or error)."""
    out = []
    while True:
        _opt, rtype, data = c.option_reply()
        out.append((rtype, data))
        if rtype != bs.REP_META_CONTEXT:
            return out


CONTEXT_REPLY = (bs.REP_META_CONTEXT, struct.pack(">I", bs.CONTEXT_ID) + bs.CONTEXT)


def structured_client(sock) -> RawNbd:
    c = RawNbd(str(sock))
    c.greet()
    c.option(p.OPT_STRUCTURED_REPLY)
    assert c.option_reply()[1] == p.REP_ACK
    c.structured = True
    return c


def block_status(c: RawNbd, offset: int, length: int, flags: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """(error, [(length, flags)]) of one NBD_CMD_BLOCK_STATUS."""
    handle = c.send_request(p.CMD_BLOCK_STATUS, offset, length, flags)
    magic, cflags, ctype, got, clen = p.STRUCTURED_REPLY.unpack(c.recv_exact(p.STRUCTURED_REPLY.size))
    assert magic == p.STRUCTURED_REPLY_MAGIC and got == handle and cflags & p.REPLY_FLAG_DONE
    payload = c.recv_exact(clen)
    if ctype == p.REPLY_TYPE_ERROR:
        return struct.unpack_from(">I", payload)[0], []
    assert ctype == bs.REPLY_TYPE_BLOCK_STATUS
    assert struct.unpack_from(">I", payload)[0] == bs.CONTEXT_ID
    return 0, [struct.unpack_from(">II", payload, pos) for pos in range(4, clen, 8)]


def test_list_and_set_meta_context_then_block_status(volume):
    filt, _path, _uri = volume
    c = structured_client(filt.unix_path)
    for queries in ((), (b"base:",), (b"base:allocation",)):
        c.option(p.OPT_LIST_META_CONTEXT, meta_data("vol-a", *queries))
        assert meta_replies(c) == [CONTEXT_REPLY, (p.REP_ACK, b"")], queries
    c.option(p.OPT_LIST_META_CONTEXT, meta_data("vol-a", b"qemu:dirty-bitmap:x"))
    assert meta_replies(c) == [(p.REP_ACK, b"")]  # nothing of that name: an empty list
    c.option(p.OPT_SET_META_CONTEXT, meta_data("vol-a", b"nope:x", b"base:allocation"))
    assert meta_replies(c) == [CONTEXT_REPLY, (p.REP_ACK, b"")]
    assert c.go("vol-a")[-1][0] == p.REP_ACK
    error, extents = block_status(c, 0, SIZE)
    assert error == 0
    assert [(n, f) for _, n, f in expected_map()] == extents
    # a range inside a hole and into data, REQ_ONE, the last byte
    assert block_status(c, 600 * KiB, 100 * KiB) == (0, [(40 * KiB, 3), (60 * KiB, 0)])
    assert block_status(c, 600 * KiB, 100 * KiB, p.CMD_FLAG_REQ_ONE) == (0, [(40 * KiB, 3)])
    assert block_status(c, SIZE - 1, 1) == (0, [(1, 3)])
    # bad input: past the end, empty, unknown flags; the connection goes on
    assert block_status(c, SIZE - 1, 2)[0] == p.NBD_EINVAL
    assert block_status(c, 0, 0)[0] == p.NBD_EINVAL
    assert block_status(c, 0, 10, 1 << 9)[0] == p.NBD_EINVAL
    assert c.read(640 * KiB, 4)[1] == b"\1" * 4
    c.disconnect()


def test_meta_context_negotiation_errors(volume):
    filt, _path, _uri = volume
    c = RawNbd(str(filt.unix_path))
    c.greet()
    c.option(p.OPT_SET_META_CONTEXT, meta_data("vol-a", b"base:allocation"))
    _opt, rtype, message = c.option_reply()
    assert rtype == p.REP_ERR_INVALID and b"STRUCTURED_REPLY" in message  # structured replies first
    c.close()
    c = structured_client(filt.unix_path)
    c.option(p.OPT_SET_META_CONTEXT, meta_data("no-such-volume", b"base:allocation"))
    assert c.option_reply()[1] == p.REP_ERR_UNKNOWN
    c.option(p.OPT_LIST_META_CONTEXT, meta_data("vol-a", b"base:allocation")[:-3])  # cut short
    assert c.option_reply()[1] == p.REP_ERR_INVALID
    c.option(p.OPT_LIST_META_CONTEXT, meta_data("vol-a") + b"x")  # longer than its queries
    assert c.option_reply()[1] == p.REP_ERR_INVALID
    # SET without base:allocation selects nothing: BLOCK_STATUS is then refused
    c.option(p.OPT_SET_META_CONTEXT, meta_data("vol-a", b"base:"))
    assert meta_replies(c) == [(p.REP_ACK, b"")]
    assert c.go("vol-a")[-1][0] == p.REP_ACK
    assert c.command(p.CMD_BLOCK_STATUS, 0, 4096) == p.NBD_EINVAL
    c.disconnect()


def test_a_context_set_for_another_export_does_not_carry_over(make_filter, tmp_path):
    for vid in ("vol-a", "vol-b"):
        sparse_volume(tmp_path / f"{vid}.img")
    filt = make_filter(volumes=("vol-a", "vol-b"))
    c = structured_client(filt.unix_path)
    c.option(p.OPT_SET_META_CONTEXT, meta_data("vol-a", b"base:allocation"))
    assert meta_replies(c) == [CONTEXT_REPLY, (p.REP_ACK, b"")]
    assert c.go("vol-b")[-1][0] == p.REP_ACK
    assert c.command(p.CMD_BLOCK_STATUS, 0, 4096) == p.NBD_EINVAL
    c.disconnect()
