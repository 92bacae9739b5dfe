"""A VRA's /metrics, scraped over HTTP and parsed with prometheus_client's own parser: its figures are the
ones the VRA's Status call and its IO filter's control socket report (real processes: a protect and a
recovery `vra serve`, a `vra iofilter`, writes through NBD)."""

from __future__ import annotations

import os

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.replication.lab import Lab, NbdClient, free_port, wait_for
from vra_appliance.proto.v1 import control_pb2 as cpb

VPG = "vpg-metrics"
SIZE = 4 << 20
WRITES = 40


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(resp.text) for s in fam.samples}


@pytest.fixture(scope="module")
def replicating(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vra-metrics")
    lab = Lab(tmp)
    ports = {"p": free_port(), "r": free_port()}
    try:
        r = lab.vra("metrics-r", split=False, extra=["--metrics-listen", f"127.0.0.1:{ports['r']}"])
        p = lab.vra("metrics-p", extra=["--metrics-listen", f"127.0.0.1:{ports['p']}"])
        source = lab.volume("vol-m", SIZE)
        reply = r.control.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir=str(tmp / "journal"),
            volumes=[cpb.ReplicaVolume(volume="vol-m", path=str(tmp / "replica.img"), size=SIZE)],
            protect_peers=["metrics-p"], history_seconds=3600))
        assert reply.ok, reply.message
        f = lab.filter("filter-m", {"vol-m": source}, p)
        rp = cpb.PeerVra(vra_id="metrics-r", address=r.address)
        reply = p.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=["vol-m"], filter_controls=[f.control_path], recover_peer=rp, compression=True,
            coordinator=True, protect_peers=[cpb.PeerVra(vra_id="metrics-p", address=p.address)],
            checkpoint_interval_ms=3_600_000, freeze_timeout_ms=1000))
        assert reply.ok, reply.message
        p.control.wait_streaming(VPG)
        nbd = NbdClient(f.nbd, "vol-m")
        for i in range(WRITES):
            nbd.write((i * 37 % 64) * 65536, (bytes([i]) * 1000 + os.urandom(24)) * 64)
        nbd.close()
        cp = p.control.Checkpoint(cpb.CheckpointRequest(vpg=VPG, tag="m", wait_durable=True, timeout_ms=30_000))
        assert cp.ok, cp.message
        # the stream is drained: every write acknowledged, nothing more to come while the test reads
        wait_for(lambda: p.control.vpg_status(VPG, "protect").counters["unacked_batches"] == 0, 30, "the acks")
        yield {"lab": lab, "p": p, "r": r, "filter": f, "urls": {k: f"http://127.0.0.1:{v}/metrics"
                                                                  for k, v in ports.items()}}
    finally:
        lab.close()


def test_protect_side_figures_are_the_status_calls(replicating):
    status = replicating["p"].control.vpg_status(VPG, "protect")
    got = scrape(replicating["urls"]["p"])
    vpg = (("vpg", VPG),)
    c = status.counters
    assert c["writes"] >= WRITES
    for metric, counter in (("zvr_vra_protect_writes_total", "writes"), ("zvr_vra_protect_write_bytes_total", "bytes"),
                            ("zvr_vra_stream_raw_bytes_sent_total", "raw_bytes_sent"),
                            ("zvr_vra_stream_wire_bytes_sent_total", "wire_bytes_sent"),
                            ("zvr_vra_stream_acked_seq", "acked_seq"), ("zvr_vra_stream_sent_seq", "next_seq"),
                            ("zvr_vra_stream_compression_ratio", "compression_ratio"),
                            ("zvr_vra_checkpoints_taken_total", "checkpoints_taken")):
        assert got[(metric, vpg)] == pytest.approx(c[counter]), metric
    assert c["compression_ratio"] > 1.0  # the writes repeat a byte: compressible
    assert got[("zvr_vra_role_state", (("role", "protect"), ("state", status.state), ("vpg", VPG)))] == 1
    # the filter, asked through the VRA, and asked directly
    fc = replicating["filter"].counters()
    fid = (("filter", "filter-m"),)
    assert got[("zvr_vra_filter_writes_total", fid)] == fc["writes"] >= WRITES
    assert got[("zvr_vra_filter_write_bytes_total", fid)] == fc["bytes_written"]
    assert got[("zvr_vra_filter_ring_bytes", fid)] == fc["queue_bytes"]
    assert got[("zvr_vra_filter_dirty_bytes", fid)] == fc["dirty_bytes"]
    assert got[("zvr_vra_filter_connected", fid)] == 1
    assert got[("zvr_vra_filter_freeze_gate_closed", fid)] == 0
    assert got[("zvr_vra_filter_freezes_total", fid)] >= 1  # the checkpoint froze it
    # its initial sync, counted once however often scraped
    syncs = [(k, v) for k, v in got.items() if k[0] == "zvr_vra_syncs_total"]
    assert syncs and all(v >= 1 for _, v in syncs)
    assert scrape(replicating["urls"]["p"])[syncs[0][0]] == syncs[0][1]


def test_recovery_side_figures_are_the_status_calls(replicating):
    status = replicating["r"].control.vpg_status(VPG, "recover")
    got = scrape(replicating["urls"]["r"])
    vpg = (("vpg", VPG),)
    c = status.counters
    assert c["last_seq"] > 0 and c["journal_bytes"] > 0
    assert got[("zvr_vra_journal_records", vpg)] == c["last_seq"]
    assert got[("zvr_vra_journal_bytes", vpg)] == c["journal_bytes"]
    assert got[("zvr_vra_journal_checkpoints", vpg)] == c["checkpoints_listed"] >= 1
    assert got[("zvr_vra_role_state", (("role", "recover"), ("state", status.state), ("vpg", VPG)))] == 1
    assert not [k for k in got if k[0].startswith("zvr_vra_protect_")]  # no protect role here


def test_a_metrics_address_that_is_taken_leaves_the_vra_serving(replicating, tmp_path):
    """The listener is not the VRA's business: its address taken, the VRA logs it and serves gRPC anyway."""
    taken = replicating["urls"]["r"].split("//")[1].split("/")[0]
    vra = Lab(tmp_path).vra("metrics-x", split=False, extra=["--metrics-listen", taken])
    try:
        assert vra.control.Status(cpb.StatusRequest()).vra_id == "metrics-x"
        wait_for(lambda: "metrics not served" in vra.proc.log(), 10, "the warning in its log")
    finally:
        vra.stop()
