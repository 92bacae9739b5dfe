"""After a long outage the replication channel reconnects within seconds of the peer coming back.

gRPC's default reconnect backoff grows towards 120 s; after ~10 s of failures its next attempt can be
more than 10 s away. The VRA's channel options cap it at 3 s.
"""

from __future__ import annotations

import socket
from concurrent import futures

import grpc

from vra_appliance.stream.transport_grpc import CHANNEL_OPTIONS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_channel_reconnects_soon_after_a_long_outage():
    port = free_port()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    try:
        # the peer is down: let the channel fail and back off for a while
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            raise AssertionError("nothing listens yet: the channel cannot be ready")
        except grpc.FutureTimeoutError:
            pass
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        try:
            # with gRPC's default backoff the next attempt would be ~10 s away by now
            grpc.channel_ready_future(channel).result(timeout=5)
        finally:
            server.stop(None)
    finally:
        channel.close()
