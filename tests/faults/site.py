"""One protected VPG across real processes, for the fault tests.

``vra iofilter`` (one volume, served over NBD) -> protect ``vra serve`` ("host-a", the VPG's coordinator,
a checkpoint every second) -> the WAN emulator (``zvm.lab.wan``, in this process) -> recovery ``vra serve``
("recover-r", on a fixed port so that it can be killed and restarted behind the emulator). A real NBD
client (fio, ``ioengine=nbd``) writes random 4 KiB blocks at a steady rate through the filter.

Final equality (``final_equality``): stop the workload, wait until the VPG is streaming (no sync needed or
running), take a checkpoint after the last write and wait until it is journaled (again, until one is
consistent), then compare the SHA-256 of the source volume file with that of the point-in-time image at the
latest consistent checkpoint (that one, or a timed one taken since; copied out with nbdcopy).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.replication.lab import Lab, free_port, run, sha256_file, wait_for
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm.lab.wan import WanEmulator

VPG = "vpg-f"
VOL = "vol-1"
MiB = 1 << 20
SIZE = 64 * MiB  # sparse
DATA = 8 * MiB  # random data written before protection starts (what the initial sync copies)
CHECKPOINT_MS = 1000


class Fio:
    """fio writing random 4 KiB blocks through the filter at a steady rate until stopped."""

    def __init__(self, uri: str, out: Path, *, rate_iops: int = 300, seed: int = 1) -> None:
        self.out = out
        argv = ["fio", "--name=steady", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k",
                f"--size={SIZE}", "--time_based", "--runtime=600", f"--rate_iops={rate_iops}", "--iodepth=4",
                "--refill_buffers", f"--randseed={seed}", "--thread", "--output-format=json", f"--output={out}"]
        # Its own process group: a fio whose NBD server died may not stop on SIGINT; then the group is killed.
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> dict:
        """Stop it (SIGINT: fio finishes its in-flight IOs and reports); returns its write statistics."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        text = self.out.read_text() if self.out.exists() else ""
        if "{" not in text:
            return {"total_ios": 0, "error": self.proc.returncode, "stderr": err.decode(errors="replace")[-500:]}
        job = json.loads(text[text.index("{"):])["jobs"][0]
        return {"total_ios": job["write"]["total_ios"], "error": job["error"]}


class FaultSite:
    def __init__(self, tmp: Path, *, protect_extra=(), filter_extra=(), buffer_bytes: int = 4 * MiB,
                 preseed: bool = False, seed: int = 1) -> None:
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.lab = Lab(tmp)
        self.fios: list[Fio] = []
        self.wan: WanEmulator | None = None
        try:
            self.source = self.lab.volume(VOL, SIZE)
            with open(self.source, "r+b") as f:
                f.write(self.rng.randbytes(DATA))
            self.replica = tmp / "replica-vol-1.img"
            if preseed:
                run(["cp", "--sparse=always", str(self.source), str(self.replica)])  # "restored from a backup"
            self.r = self.lab.vra("recover-r", split=False, nbd=True, port=free_port())
            self.wan = WanEmulator(("127.0.0.1", 0), ("127.0.0.1", self.r.port), latency_ms=1).start()
            self.p = self.lab.vra("host-a", extra=protect_extra)
            reply = self.r.control.ConfigureRecover(cpb.RecoverConfig(
                vpg=VPG, journal_dir=str(tmp / "journal"), protect_peers=["host-a"],
                volumes=[cpb.ReplicaVolume(volume=VOL, path=str(self.replica), size=SIZE)]))
            assert reply.ok, reply.message
            self.filter = self.lab.filter("filter-a", {VOL: self.source}, self.p, extra=filter_extra)
            self.buffer_bytes = buffer_bytes
            self.preseed = preseed
        except BaseException:
            self.close()
            raise

    @property
    def wan_address(self) -> str:
        return f"127.0.0.1:{self.wan.address[1]}"

    def protect(self, **kw) -> None:
        """Configure the protect role (the ZVM's ConfigureProtect): the volume is new to it."""
        reply = self.p.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=[VOL], filter_controls=[self.filter.control_path], compression=True,
            coordinator=True, recover_peer=cpb.PeerVra(vra_id="recover-r", address=self.wan_address),
            protect_peers=[cpb.PeerVra(vra_id="host-a", address=self.p.address)],
            checkpoint_interval_ms=CHECKPOINT_MS, freeze_timeout_ms=1000, buffer_bytes=self.buffer_bytes,
            preseeded_volumes=[VOL] if self.preseed else [], **kw))
        assert reply.ok, reply.message

    # -- status ------------------------------------------------------------------------------------------------
    def status(self) -> cpb.VpgStatus:
        return self.p.control.vpg_status(VPG, "protect")

    def recover_status(self) -> cpb.VpgStatus:
        return self.r.control.vpg_status(VPG, "recover")

    def wait_streaming(self, timeout: float = 90.0) -> cpb.VpgStatus:
        return self.p.control.wait_streaming(VPG, timeout)

    def wait_drained(self, timeout: float = 60.0) -> None:
        """Wait until the recovery VRA acknowledged everything the protect VRA holds."""
        wait_for(lambda: self.status().counters["buffered_bytes"] == 0, timeout, "the stream to drain")

    def syncs(self, kind: str | None = None, completed: bool | None = None) -> list[cpb.SyncReport]:
        return [r for r in self.status().last_syncs
                if (kind is None or r.kind == kind) and (completed is None or r.completed == completed)]

    def checkpoints(self) -> list[cpb.CheckpointEntry]:
        return list(self.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=VPG)).checkpoints)

    # -- workload ------------------------------------------------------------------------------------------------
    def start_workload(self, rate_iops: int = 300) -> Fio:
        fio = Fio(self.filter.uri(VOL), self.tmp / f"fio-{len(self.fios)}.json", rate_iops=rate_iops,
                  seed=self.rng.randrange(1 << 30))
        self.fios.append(fio)
        return fio

    def filter_writes(self) -> int:
        return self.filter.counters()["writes"]

    def wait_writes(self, n: int, timeout: float = 60.0) -> None:
        """Wait until the filter has taken ``n`` more writes (the workload is really running)."""
        start = self.filter_writes()
        wait_for(lambda: self.filter_writes() >= start + n, timeout, f"{n} writes through the filter")

    # -- data ----------------------------------------------------------------------------------------------------
    def checkpoint(self, tag: str = "", must: bool = True) -> cpb.CheckpointReply:
        reply = self.p.control.Checkpoint(
            cpb.CheckpointRequest(vpg=VPG, tag=tag, wait_durable=True, timeout_ms=60_000), timeout=90)
        assert reply.ok or not must, reply.message
        return reply

    def image_sha256(self, checkpoint_id: str) -> str:
        export = self.r.control.OpenImage(
            cpb.OpenImageRequest(vpg=VPG, volume=VOL, checkpoint_id=checkpoint_id)).export_name
        try:
            out = self.tmp / "image.img"
            run(["nbdcopy", f"nbd+unix:///{export}?socket={self.r.nbd}", str(out)])
            digest = sha256_file(out)
            out.unlink()
            return digest
        finally:
            self.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))

    def final_equality(self) -> cpb.CheckpointReply:
        """See the module docstring. Returns the checkpoint compared."""
        for fio in self.fios:
            fio.stop()
        last = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.wait_streaming()
            # A filter that restarted, or whose VRA did, may still be reconnecting its split stream: a
            # checkpoint then cannot be marked.
            wait_for(lambda: self.filter.counters()["vra"] == "connected", 30, "the filter to reach its VRA")
            last = self.checkpoint("final", must=False)
            if last.ok and last.consistent:
                break
            # A sync became needed between the wait and the checkpoint (e.g. the filter's last writes went
            # to its dirty map), or the checkpoint could not be marked: wait for streaming again.
        assert last is not None and last.ok and last.consistent, f"no consistent checkpoint after the last write: {last}"
        # The latest consistent checkpoint: ours, or a timed one taken since (also after the last write).
        consistent = [c.checkpoint_id for c in self.checkpoints() if c.consistent]
        assert last.checkpoint_id in consistent
        latest = consistent[-1]
        assert self.image_sha256(latest) == sha256_file(self.source), \
            "the image at the latest consistent checkpoint differs from the source volume"
        return last

    def close(self) -> None:
        for fio in self.fios:
            if fio.alive():
                fio.stop()
        self.lab.close()
        if self.wan is not None:
            self.wan.stop()
