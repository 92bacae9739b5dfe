"""End to end, real processes: two hosts (a `vra iofilter` and a protect `vra serve` each, one VM volume
each), one recovery `vra serve`; real NBD clients write (qemu-io, fio) and read the point-in-time images
(nbdcopy, qemu-img compare). The two protect VRAs feed one VPG.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from vra_appliance.proto.v1 import control_pb2 as cpb

from .conftest import wait_for
from .lab import Lab, NbdClient, run, sha256_file

VPG = "vpg-1"
SIZE = 8 << 20
HISTORY_S = 3600


class TwoHosts:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.lab = Lab(tmp)
        lab = self.lab
        self.r = lab.vra("recover-r", split=False, nbd=True)
        self.a = lab.vra("host-a")
        self.b = lab.vra("host-b")
        self.sources = {"vol-1": lab.volume("vol-1", SIZE), "vol-2": lab.volume("vol-2", SIZE)}
        self.configure_recover(HISTORY_S)
        self.fa = lab.filter("filter-a", {"vol-1": self.sources["vol-1"]}, self.a)
        self.fb = lab.filter("filter-b", {"vol-2": self.sources["vol-2"]}, self.b)
        self.filters = {"vol-1": self.fa, "vol-2": self.fb}
        peers = [cpb.PeerVra(vra_id="host-a", address=self.a.address),
                 cpb.PeerVra(vra_id="host-b", address=self.b.address)]
        rp = cpb.PeerVra(vra_id="recover-r", address=self.r.address)
        # Timed checkpoints every hour: the tests take theirs on demand, at points where they know the source.
        reply = self.a.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=["vol-1"], filter_controls=[self.fa.control_path], recover_peer=rp, compression=True,
            coordinator=True, protect_peers=peers, checkpoint_interval_ms=3_600_000, freeze_timeout_ms=1000))
        assert reply.ok, reply.message
        reply = self.b.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=["vol-2"], filter_controls=[self.fb.control_path], recover_peer=rp, compression=True,
            freeze_timeout_ms=1000))
        assert reply.ok, reply.message
        # New volumes: an initial sync each (sparse and empty here: nothing to send), then streaming.
        self.a.control.wait_streaming(VPG)
        self.b.control.wait_streaming(VPG)

    def configure_recover(self, history_s: int) -> None:
        reply = self.r.control.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir=str(self.tmp / "journal"),
            volumes=[cpb.ReplicaVolume(volume=v, path=str(self.tmp / f"replica-{v}.img"), size=SIZE)
                     for v in ("vol-1", "vol-2")],
            protect_peers=["host-a", "host-b"], history_seconds=history_s))
        assert reply.ok, reply.message

    def checkpoint(self, tag: str = "", wait: bool = True) -> cpb.CheckpointReply:
        reply = self.a.control.Checkpoint(cpb.CheckpointRequest(vpg=VPG, tag=tag, wait_durable=wait, timeout_ms=30_000))
        assert reply.ok, reply.message
        return reply

    def checkpoints(self) -> list[cpb.CheckpointEntry]:
        return list(self.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=VPG)).checkpoints)

    def open_image(self, volume: str, checkpoint_id: str) -> str:
        reply = self.r.control.OpenImage(cpb.OpenImageRequest(vpg=VPG, volume=volume, checkpoint_id=checkpoint_id))
        return reply.export_name

    def close_image(self, export: str) -> None:
        self.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))

    def image_uri(self, export: str) -> str:
        return f"nbd+unix:///{export}?socket={self.r.nbd}"

    def recover_counter(self, name: str) -> float:
        return self.r.control.vpg_status(VPG, "recover").counters[name]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    h = TwoHosts(tmp_path_factory.mktemp("two-hosts"))
    yield h
    h.lab.close()


def qemu_io(uri: str, commands: list[str]) -> None:
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    run([*argv, uri])


def round_writes(rnd: int, volume_index: int) -> list[str]:
    """A few writes per round: aligned and unaligned, overlapping earlier rounds, distinct patterns."""
    out = []
    for i in range(6):
        offset = ((rnd * 7 + i * 13 + volume_index * 5) % 60) * 100_003 + i * 511
        length = 4096 * (1 + (rnd + i) % 16) + (i * 37) % 512
        pattern = (rnd * 16 + i * 3 + volume_index) % 255 + 1
        out.append(f"write -P {pattern} {offset} {length}")
    return out


def test_every_checkpoint_image_equals_the_source_also_after_promotion(hosts: TwoHosts) -> None:
    rounds = 4
    expected: dict[str, dict[str, str]] = {}  # checkpoint id -> volume -> sha256 of the source
    copies: dict[str, dict[str, Path]] = {}
    for rnd in range(rounds):
        if rnd == 2:
            # fio through the filter too: 64 KiB writes, half-compressible data.
            jobs = [threading.Thread(target=run, args=([
                "fio", "--name=w", "--ioengine=nbd", f"--uri={hosts.filters[v].uri(v)}", "--rw=randwrite",
                "--bs=64k", "--size=2M", "--offset=1M", "--buffer_compress_percentage=50", "--refill_buffers",
                f"--randseed={rnd + i}", "--output-format=terse"],)) for i, v in enumerate(("vol-1", "vol-2"))]
        else:
            jobs = [threading.Thread(target=qemu_io, args=(hosts.filters[v].uri(v), round_writes(rnd, i)))
                    for i, v in enumerate(("vol-1", "vol-2"))]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()
        # The writers are done (paused): the sources are what the checkpoint must show.
        cp = hosts.checkpoint(f"round-{rnd}")
        assert cp.consistent, cp.message
        expected[cp.checkpoint_id] = {v: sha256_file(p) for v, p in hosts.sources.items()}
        copies[cp.checkpoint_id] = {}
        for v, p in hosts.sources.items():
            copy = hosts.tmp / f"source-{v}-round-{rnd}.img"
            shutil.copyfile(p, copy)
            copies[cp.checkpoint_id][v] = copy

    listed = {c.checkpoint_id: c for c in hosts.checkpoints()}
    assert set(expected) <= set(listed)
    assert [listed[c].tag for c in expected] == [f"round-{r}" for r in range(rounds)]
    assert all(listed[c].consistent for c in expected)
    assert len({h for e in expected.values() for h in e.values()}) == 2 * rounds  # every round changed both

    def verify(checkpoint_id: str, compare: bool) -> None:
        for v in ("vol-1", "vol-2"):
            export = hosts.open_image(v, checkpoint_id)
            try:
                out = hosts.tmp / f"image-{v}.img"
                run(["nbdcopy", hosts.image_uri(export), str(out)])
                assert sha256_file(out) == expected[checkpoint_id][v], f"{v} at {listed[checkpoint_id].tag}"
                if compare:
                    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(copies[checkpoint_id][v]),
                         hosts.image_uri(export)])
            finally:
                hosts.close_image(export)

    ids = list(expected)
    for i, cid in enumerate(ids):
        verify(cid, compare=(i == len(ids) - 1))
    assert hosts.recover_counter("promoted_seq") == 0

    # Promotion: keep an image open at round 1 (it pins the promoter there), shorten the history, and wait
    # until everything up to round 1 is in the replica. Rounds 1.. must still read exactly as the source.
    pin_cp = ids[1]
    pin = hosts.open_image("vol-1", pin_cp)
    try:
        hosts.configure_recover(1)
        wait_for(lambda: hosts.recover_counter("promoted_seq") == listed[pin_cp].seq, 30, "promotion up to round 1")
        still = {c.checkpoint_id for c in hosts.checkpoints()}
        assert ids[0] not in still and set(ids[1:]) <= still
        for cid in ids[1:]:
            verify(cid, compare=(cid == pin_cp))
    finally:
        hosts.configure_recover(HISTORY_S)
        hosts.close_image(pin)
    # The replica itself is now the source as of round 1.
    for v in ("vol-1", "vol-2"):
        assert sha256_file(hosts.tmp / f"replica-{v}.img") == expected[pin_cp][v]


SLOT = 4096
SLOTS = 64
REGION = SIZE - SLOTS * SLOT  # the last 256 KiB of each volume, apart from the data test's writes


def block(kind: bytes, k: int) -> bytes:
    head = b"%s%08d" % (kind, k) + (b" names A%08d" % k if kind == b"B" else b"")
    return (head + b"." * (64 - len(head))) * (SLOT // 64)


def slot_index(data: bytes, kind: bytes) -> int:
    if data == bytes(SLOT):
        return 0
    assert data[:1] == kind, data[:32]
    return int(data[1:9])


def newest(slot: int, top: int) -> int:
    """The last k <= top written to ``slot`` (k % SLOTS == slot), 0 if none."""
    return max((k for k in range(slot, top + 1, SLOTS) if k > 0), default=0)


def test_dependent_writes_are_never_split_by_a_checkpoint(hosts: TwoHosts) -> None:
    """A_k on vol-1 (host a), then once it completed B_k on vol-2 (host b), then A_k+1... while checkpoints
    are taken: every checkpoint must show a prefix of that chain, B_k never without A_k."""
    before = {c.checkpoint_id for c in hosts.checkpoints()}
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        c1 = NbdClient(hosts.fa.nbd, "vol-1")
        c2 = NbdClient(hosts.fb.nbd, "vol-2")
        try:
            k = 0
            while not stop.is_set() and k < 5000:
                k += 1
                c1.write(REGION + (k % SLOTS) * SLOT, block(b"A", k))
                c2.write(REGION + (k % SLOTS) * SLOT, block(b"B", k))
                written[0] = k
        finally:
            c1.close()
            c2.close()

    t = threading.Thread(target=writer)
    t.start()
    taken = []
    try:
        while len(taken) < 25 and t.is_alive():
            taken.append(hosts.checkpoint(wait=False))
    finally:
        stop.set()
        t.join()
    last = hosts.checkpoint("after-dependent-writes")
    taken.append(last)
    assert written[0] > SLOTS
    cps = [c for c in hosts.checkpoints() if c.checkpoint_id not in before]
    assert {c.checkpoint_id for c in taken} <= {c.checkpoint_id for c in cps}
    # A checkpoint whose filter hold expired before the thaw (a very slow machine) is recorded as not
    # consistent, and promises nothing about dependent writes; the others must all hold.
    consistent = [c for c in cps if c.consistent]
    assert len(consistent) >= max(5, len(cps) - 3), [c.consistent for c in cps]
    seen = {}
    for cp in cps:
        regions = {}
        for v in ("vol-1", "vol-2"):
            export = hosts.open_image(v, cp.checkpoint_id)
            try:
                client = NbdClient(hosts.r.nbd, export)
                regions[v] = client.read(REGION, SLOTS * SLOT)
                client.close()
            finally:
                hosts.close_image(export)
        a = [slot_index(regions["vol-1"][i * SLOT:(i + 1) * SLOT], b"A") for i in range(SLOTS)]
        b = [slot_index(regions["vol-2"][i * SLOT:(i + 1) * SLOT], b"B") for i in range(SLOTS)]
        top_a, top_b = max(a), max(b)
        seen[cp.checkpoint_id] = top_a
        if not cp.consistent:
            continue
        assert top_b in (top_a - 1, top_a), f"checkpoint {cp.tag or cp.checkpoint_id}: A up to {top_a}, B up to {top_b}"
        # Exactly the state after A_top_a (and B_top_b): every slot holds its newest write of the prefix.
        for s in range(SLOTS):
            assert a[s] == newest(s, top_a) and b[s] == newest(s, top_b), f"slot {s} at {cp.checkpoint_id}"
    assert seen[last.checkpoint_id] == written[0]
    assert len({seen[c.checkpoint_id] for c in consistent}) > 3, seen  # at many points of the chain
