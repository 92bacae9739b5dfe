"""Mutual TLS between VRAs: the recovery daemon with certificates accepts a paired VRA's certificate, and
refuses a certificate of another name or another CA."""

from __future__ import annotations

import datetime
import hashlib
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.stream.transport import UNPAIRED_PEER, Hello, Refused, TransientError
from vra_appliance.stream.transport_grpc import GrpcTransport
from vra_appliance.stream.wire import StreamWrite, seal
from vra_appliance.trust.auth import Security

from .lab import Proc, wait_for


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, directory: Path, cn: str) -> Security:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        paths = directory / f"{cn}.pem", directory / f"{cn}.key", directory / "ca.pem"
        paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        paths[2].write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return Security(*paths)


@pytest.fixture
def tls_recovery(tmp_path):
    ca = Ca("site-ca")
    server = ca.issue(tmp_path / "recover", "recover-r")
    port_file = tmp_path / "port"
    proc = Proc("vra-recover-tls", [
        sys.executable, "-m", "vra_appliance.cli", "serve", "--vra-id", "recover-r", "--listen", "127.0.0.1:0",
        "--port-file", str(port_file), "--state-dir", str(tmp_path / "state"), "--no-split",
        "--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-ca", str(server.ca)], tmp_path)
    try:
        wait_for(lambda: port_file.exists() or not proc.alive(), 60, "vra serve with TLS")
        assert proc.alive(), proc.log()
        yield ca, f"127.0.0.1:{int(port_file.read_text())}"
    finally:
        proc.stop()


def test_mutual_tls_between_vras(tls_recovery, tmp_path) -> None:
    ca, address = tls_recovery
    host_a = ca.issue(tmp_path / "a", "host-a")
    channel = host_a.channel(address, "recover-r")
    control = cpb_grpc.ControlStub(channel)
    reply = control.ConfigureRecover(cpb.RecoverConfig(
        vpg="vpg-t", journal_dir=str(tmp_path / "journal"), protect_peers=["host-a"],
        volumes=[cpb.ReplicaVolume(volume="vol-1", path=str(tmp_path / "replica.img"), size=1 << 20)]), timeout=30)
    assert reply.ok, reply.message

    t = GrpcTransport(address, peer_id="recover-r", security=host_a)
    try:
        assert t.open(Hello("vpg-t", "host-a", 0)).durable_seq == 0
        data = hashlib.sha256(b"tls").digest() * 128
        assert t.send(seal("vpg-t", [StreamWrite(1, time.time_ns(), "vol-1", 0, data)])).result(20).durable_seq == 1
    finally:
        t.shutdown()

    # A certificate of the same CA but another VRA cannot speak for host-a.
    host_z = ca.issue(tmp_path / "z", "host-z")
    t = GrpcTransport(address, peer_id="recover-r", security=host_z)
    try:
        with pytest.raises(Refused) as err:
            t.open(Hello("vpg-t", "host-a", 0))
        assert err.value.reason == UNPAIRED_PEER
    finally:
        t.shutdown()

    # A certificate of another CA does not get through the handshake.
    rogue = Ca("rogue-ca").issue(tmp_path / "rogue", "host-a")
    rogue = Security(rogue.cert, rogue.key, ca.issue(tmp_path / "ca-only", "unused").ca)  # trusts the server
    t = GrpcTransport(address, peer_id="recover-r", security=rogue, open_timeout=10)
    try:
        with pytest.raises((TransientError, Refused)):
            t.open(Hello("vpg-t", "host-a", 0))
    finally:
        t.shutdown()
    with pytest.raises(grpc.RpcError):
        cpb_grpc.ControlStub(rogue.channel(address, "recover-r")).Status(cpb.StatusRequest(), timeout=10)

    status = control.Status(cpb.StatusRequest(vpg="vpg-t"), timeout=30).vpgs[0]
    assert status.counters["last_seq"] == 1 and status.counters["peer_host-a_durable_seq"] == 1
    channel.close()
