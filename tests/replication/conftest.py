"""Fixtures of the replication tests: a recovery endpoint over an in-memory journal, and both transports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from vra_appliance.proto.v1 import replication_pb2_grpc as pb_grpc
from vra_appliance.recover import MemoryJournal
from vra_appliance.recover.service.receiver import RecoveryEndpoint, VpgReceiver
from vra_appliance.stream.transport import InProcessTransport, Transport
from vra_appliance.stream.transport_grpc import SERVER_OPTIONS, GrpcTransport, ReplicationServicer
from vra_appliance.trust.auth import Security

from .lab import wait_for  # noqa: F401 (re-exported for the tests)

SECRET = "s3cret-pairing"


class Recovery:
    """A recovery endpoint with one VPG per ``add_vpg``; the committer runs when ``start`` is true."""

    def __init__(self, tmp_path, start: bool = True) -> None:
        self.tmp_path = tmp_path
        self.endpoint = RecoveryEndpoint()
        self.journal = MemoryJournal()
        self.start = start
        self.receivers: list[VpgReceiver] = []

    def add_vpg(self, vpg: str, paired=("protect-a",), **kw) -> VpgReceiver:
        rx = VpgReceiver(vpg, self.journal, self.tmp_path / f"{vpg}.positions", paired=set(paired),
                         recover_id="recover-1", **kw)
        self.endpoint.add(rx)
        self.receivers.append(rx)
        if self.start:
            rx.start()
        return rx

    def close(self) -> None:
        for rx in self.receivers:
            rx.stop()


@pytest.fixture
def recovery(tmp_path) -> Iterator[Recovery]:
    r = Recovery(tmp_path)
    yield r
    r.close()


class GrpcServer:
    def __init__(self, endpoint, security: Security) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=SERVER_OPTIONS)
        pb_grpc.add_ReplicationServicer_to_server(ReplicationServicer(endpoint, security), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


@pytest.fixture(params=["inprocess", "grpc"])
def make_transport(request, recovery) -> Iterator[Callable[..., Transport]]:
    """``make_transport(peer_id, secret=SECRET) -> Transport`` to ``recovery``, in process or over gRPC."""
    made: list = []
    server = None
    if request.param == "grpc":
        server = GrpcServer(recovery.endpoint, Security(pairing_secret=SECRET))

    def make(peer_id: str = "protect-a", secret: str | None = SECRET) -> Transport:
        if server is None:
            # In process there is no handshake: a wrong secret is an unauthenticated caller.
            t = InProcessTransport(recovery.endpoint, peer_id if secret == SECRET else None)
        else:
            t = GrpcTransport(server.address, security=Security(pairing_secret=secret))
        made.append(t)
        return t

    make.kind = request.param
    yield make
    for t in made:
        if hasattr(t, "shutdown"):
            t.shutdown()
        else:
            t.close()
    if server is not None:
        server.stop()
