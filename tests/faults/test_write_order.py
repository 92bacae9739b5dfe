"""Write order across NBD connections: the replica gets the same order as the source volume.

The filter advertises multi-conn, so a VM may write the same blocks on several connections at once.
Whatever order the overlapping writes reached the volume in, the split stream must carry them in that
same order, or the replica ends up with another version of a block than the source and nothing notices.

Four connections each sweep a 1 MiB region twice, as fast as the filter takes them (every request of a
round pipelined), each writing every 4 KiB step of it with its own pattern, 4 or 8 KiB at a time (so
writes also overlap in part), in the same random order: every block's last version is decided by a race
between connections. 32 rounds, each in a region of its own (a round that went wrong stays wrong), then a
consistent checkpoint, and the point-in-time image must equal the source by SHA-256 (tests/faults/site.py);
for the shared ring, and for the socket (``--no-ring``). The filter's queue and the protect VRA's buffer
hold several rounds, so no bitmap sync resends the source's bytes over a wrong order (with the site's
4 MiB buffer, syncs hid most of it; the rounds are paced so that the buffer never fills). On the filter before the fix, 15 to 22 of the 32 regions differed in
every run. The image's block status (``nbdinfo --map``) lists the same data and holes as the source
volume's.
"""

from __future__ import annotations

import os
import random
import socket
import threading

import pytest

from tests.replication.lab import NbdClient, run, wait_for
from vra_appliance.iofilter import nbd_proto as p
from vra_appliance.proto.v1 import control_pb2 as cpb

from .site import VOL, VPG, FaultSite

REGION = 1 << 20
FIRST_REGION = 8  # MiB: after the data the site wrote before protection
STEP = 4096
STEPS = REGION // STEP
SWEEPS = 2
CONNECTIONS = 4
ROUNDS = 32  # a region each: a round whose replica went wrong stays wrong (the test's odds add up)
PACE_BYTES = 32 << 20  # a round starts once the protect VRA holds at most this (its buffer: 128 MiB)


def sweep(client: NbdClient, conn: int, rnd: int, errors: list) -> None:
    """Send every write of round ``rnd`` at once (a thread reads the replies meanwhile)."""
    rng = random.Random(rnd)  # the same order on every connection: they meet at every block
    base = (FIRST_REGION + rnd) * REGION
    requests = []
    for s in range(SWEEPS):
        order = list(range(STEPS))
        rng.shuffle(order)
        for n, i in enumerate(order):
            length = STEP * (1 + (i + conn) % 2)
            pattern = bytes([(rnd * 64 + s * 16 + conn * 4 + i) % 251 + 1]) * length
            requests.append(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_WRITE, s * STEPS + n + 1, base + i * STEP,
                                           length) + pattern)

    def replies() -> None:
        try:
            for _ in requests:
                buf = b""
                while len(buf) < p.SIMPLE_REPLY.size:
                    chunk = client.sock.recv(p.SIMPLE_REPLY.size - len(buf))
                    if not chunk:
                        raise ConnectionError("the filter closed the connection")
                    buf += chunk
                _magic, error, handle = p.SIMPLE_REPLY.unpack(buf)
                if error:
                    errors.append((conn, handle, error))
        except (OSError, ConnectionError) as exc:
            errors.append((conn, repr(exc)))

    reader = threading.Thread(target=replies)
    reader.start()
    try:
        client.sock.sendall(b"".join(requests))
    except OSError as exc:
        errors.append((conn, repr(exc)))
    reader.join()


def race(clients: list[NbdClient], rnd: int) -> None:
    errors: list = []
    threads = [threading.Thread(target=sweep, args=(c, i, rnd, errors)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def differences(site: FaultSite) -> str:
    """Where the image at each of the last consistent checkpoints differs from the source (MiB indices),
    copied with the image's block status and without it (``nbdcopy --no-extents``)."""
    out = []
    for cid in [c.checkpoint_id for c in site.checkpoints() if c.consistent][-3:]:
        export = site.r.control.OpenImage(cpb.OpenImageRequest(vpg=VPG, volume=VOL, checkpoint_id=cid)).export_name
        try:
            for extents in ("", "--no-extents"):
                image = site.tmp / "image-regions.img"
                run(["nbdcopy", *([extents] if extents else []), f"nbd+unix:///{export}?socket={site.r.nbd}",
                     str(image)])
                with open(site.source, "rb") as src, open(image, "rb") as img:
                    differ = [mib for mib in range(os.path.getsize(site.source) // REGION)
                              if src.read(REGION) != img.read(REGION)]
                out.append(f"{cid}{' ' + extents if extents else ''}: MiB {differ}")
                image.unlink()
        finally:
            site.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))
    return "; ".join(out)


@pytest.mark.parametrize("transport", ["ring", "socket"])
def test_overlapping_writes_on_several_connections_reach_the_replica_in_the_volume_order(short_tmp, transport):
    # A filter queue and a protect buffer that hold several rounds: writes that go to a dirty map are resent
    # by a bitmap sync from the source, which would test the sync rather than the order.
    extra = ["--queue-mib", "256", *(["--no-ring"] if transport == "socket" else [])]
    site = FaultSite(short_tmp, filter_extra=extra, buffer_bytes=128 << 20)
    clients: list[NbdClient] = []
    try:
        site.protect()
        site.wait_streaming()
        assert site.filter.counters()["transport"] == transport
        clients = [NbdClient(site.filter.nbd, VOL) for _ in range(CONNECTIONS)]
        for c in clients:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for rnd in range(ROUNDS):
            # Paced between rounds (never within one): the compiled write path outruns the WAN, and a full
            # protect buffer sends writes to a dirty map (then a bitmap sync tests the sync, not the order).
            wait_for(lambda: site.status().counters["buffered_bytes"] <= PACE_BYTES, 60, "the protect buffer to drain")
            race(clients, rnd)
        try:
            site.final_equality()
        except AssertionError as exc:
            syncs = [(r.kind, r.completed) for r in site.status().last_syncs]
            raise AssertionError(f"{exc}; {differences(site)} (rounds wrote MiB {FIRST_REGION}-"
                                 f"{FIRST_REGION + ROUNDS - 1}; "
                                 f"writes diverted to the dirty map: {site.filter.counters()['diverted_writes']}; "
                                 f"syncs: {syncs})") from None
        # block status of the image (served by the recovery VRA) maps the same holes as the source's
        latest = [c.checkpoint_id for c in site.checkpoints() if c.consistent][-1]
        export = site.r.control.OpenImage(cpb.OpenImageRequest(vpg=VPG, volume=VOL, checkpoint_id=latest)).export_name
        try:
            image_map = run(["nbdinfo", "--map", f"nbd+unix:///{export}?socket={site.r.nbd}"])
        finally:
            site.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))
        source_map = run(["nbdinfo", "--map", site.filter.uri(VOL)])
        assert image_map == source_map and "hole,zero" in source_map, (image_map, source_map)
    finally:
        for c in clients:
            c.close()
        site.close()
