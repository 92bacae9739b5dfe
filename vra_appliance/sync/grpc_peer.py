"""The delta sync's checksum exchange over gRPC, without a .proto: one unary method carrying bytes. This
module is the client (``GrpcChecksumPeer``); the server's handler is ``vra_appliance.rpc.checksums``.

``/zvr.vra.sync.v1.Checksums/Call`` takes ``u16 len + vpg + message`` (a ``messages.py`` encoding:
DeltaOpen, GroupRequest, LeafRequest or CloseRequest) and answers the reply's encoding (GroupDigests,
LeafDigests) or nothing. It can be added to the VRA's gRPC server on port 4005 next to the replication
service (``server.add_generic_rpc_handlers((rpc.checksums.checksum_handler(resolve, authorize),))``; ``vra serve`` does),
so the channel's TLS applies; ``authorize(context, vpg)`` is where the server checks the caller is paired
with the VPG (``vra serve``: the same credentials and pairing as the replication stream).

Errors cross the wire as a status code and ``"ClassName: message"``; the client raises the same
``vra_appliance.errors`` class with the same message (``raise ... from`` the RpcError). Anything else
from gRPC becomes TransientError (unavailable, deadline, cancelled: run the sync again) or PermanentError.
"""

from __future__ import annotations

import struct

import grpc

from vra_appliance import errors as E
from vra_appliance.sync.messages import (
    CloseRequest,
    DeltaOpen,
    GroupDigests,
    GroupRequest,
    LeafDigests,
    LeafRequest,
)

SERVICE = "zvr.vra.sync.v1.Checksums"
METHOD = f"/{SERVICE}/Call"

_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}


def envelope(vpg: str, msg) -> bytes:
    raw = vpg.encode()
    return struct.pack("<H", len(raw)) + raw + msg.encode()


def _translate(exc: grpc.RpcError) -> E.ApplianceError:
    details = exc.details() or ""
    name, sep, message = details.partition(": ")
    cls = getattr(E, name, None) if sep else None
    if isinstance(cls, type) and issubclass(cls, E.ApplianceError):
        err = cls.__new__(cls)
        Exception.__init__(err, message)
        return err
    if exc.code() in _TRANSIENT:
        return E.TransientError(f"the recovery VRA did not answer the delta sync ({exc.code().name}: {details}); "
                                "the sync runs again")
    return E.PermanentError(f"the recovery VRA refused the delta sync ({exc.code().name}: {details})")


class GrpcChecksumPeer:
    """A ChecksumPeer (vra_appliance.sync.delta) for one VPG over a gRPC channel to the recovery VRA."""

    def __init__(self, channel: grpc.Channel, vpg: str, timeout: float = 120.0,
                 metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.vpg = vpg
        self.timeout = timeout
        self.metadata = metadata  # the pairing secret, when the VRAs pair by secret (auth.Security.metadata)
        self._call = channel.unary_unary(METHOD)

    def _do(self, msg) -> bytes:
        try:
            return self._call(envelope(self.vpg, msg), timeout=self.timeout, metadata=self.metadata or None)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc
        except ValueError as exc:  # the channel was closed (the VRA is stopping the sync)
            raise E.TransientError(f"the channel to the recovery VRA is closed ({exc}); the sync runs again") from exc

    def open(self, request: DeltaOpen) -> None:
        self._do(request)

    def group_digests(self, volume: str, first_group: int, count: int) -> GroupDigests:
        return GroupDigests.decode(self._do(GroupRequest(volume, first_group, count)))

    def leaf_digests(self, request: LeafRequest) -> LeafDigests:
        return LeafDigests.decode(self._do(request))

    def close(self, volume: str) -> None:
        try:
            self._do(CloseRequest(volume))
        except E.TransientError:
            pass  # the recovery side forgets an idle sync anyway
