"""The delta sync's checksum exchange over gRPC, without a .proto: one unary method carrying bytes.

``/zvr.vra.sync.v1.Checksums/Call`` takes ``u16 len + vpg + message`` (a ``messages.py`` encoding:
DeltaOpen, GroupRequest, LeafRequest or CloseRequest) and answers the reply's encoding (GroupDigests,
LeafDigests) or nothing. It can be added to the VRA's gRPC server on port 4005 next to the replication
service (``server.add_generic_rpc_handlers((checksum_handler(resolve, authorize),))``; ``vra serve`` does),
so the channel's TLS applies; ``authorize(context, vpg)`` is where the server checks the caller is paired
with the VPG (``vra serve``: the same credentials and pairing as the replication stream).

Errors cross the wire as a status code and ``"ClassName: message"``; the client raises the same
``vra_appliance.sync.errors`` class with the same message (``raise ... from`` the RpcError). Anything else
from gRPC becomes TransientError (unavailable, deadline, cancelled: run the sync again) or PermanentError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import grpc

from vra_appliance.sync import errors as E
from vra_appliance.sync.delta import ReplicaChecksums
from vra_appliance.sync.messages import (
    CloseRequest,
    DeltaOpen,
    GroupDigests,
    GroupRequest,
    LeafDigests,
    LeafRequest,
    decode,
)

SERVICE = "zvr.vra.sync.v1.Checksums"
METHOD = f"/{SERVICE}/Call"

_STATUS = [  # most specific first
    (E.UnknownVolumeError, grpc.StatusCode.NOT_FOUND),
    (E.UnknownVpgError, grpc.StatusCode.NOT_FOUND),
    (E.PermanentError, grpc.StatusCode.FAILED_PRECONDITION),
    (E.CorruptionError, grpc.StatusCode.DATA_LOSS),
    (E.TransientError, grpc.StatusCode.UNAVAILABLE),
]
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}


def _envelope(vpg: str, msg) -> bytes:
    raw = vpg.encode()
    return struct.pack("<H", len(raw)) + raw + msg.encode()


def checksum_handler(resolve: Callable[[str], ReplicaChecksums | None],
                     authorize: Callable[[grpc.ServicerContext, str], bool] | None = None):
    """The generic handler of the service. ``resolve(vpg)`` is the VPG's recovery side (None: unknown)."""

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            if len(request) < 2:
                raise E.ChecksumListError("?", "empty request")
            (n,) = struct.unpack_from("<H", request)
            vpg = request[2:2 + n].decode("utf-8", "replace")
            if authorize is not None and not authorize(context, vpg):
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"caller is not paired with VPG {vpg!r}: pair the sites, then restart the sync")
            side = resolve(vpg)
            if side is None:
                raise E.UnknownVpgError(vpg)
            msg = decode(request[2 + n:])
            if isinstance(msg, DeltaOpen):
                side.open(msg)
                return b""
            if isinstance(msg, GroupRequest):
                return side.group_digests(msg.volume, msg.first_group, msg.count).encode()
            if isinstance(msg, LeafRequest):
                return side.leaf_digests(msg).encode()
            if isinstance(msg, CloseRequest):
                side.close(msg.volume)
                return b""
            raise E.ChecksumListError("?", f"{type(msg).__name__} is a reply, not a request")
        except E.SyncError as exc:
            code = next(c for cls, c in _STATUS if isinstance(exc, cls))
            context.abort(code, f"{type(exc).__name__}: {exc}")
        except OSError as exc:  # reading the recovery side's volume
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"TransientError: reading the recovery side's volume failed ({exc}); the sync runs again")

    return grpc.method_handlers_generic_handler(SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(call)})


def _translate(exc: grpc.RpcError) -> E.SyncError:
    details = exc.details() or ""
    name, sep, message = details.partition(": ")
    cls = getattr(E, name, None) if sep else None
    if isinstance(cls, type) and issubclass(cls, E.SyncError):
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
            return self._call(_envelope(self.vpg, msg), timeout=self.timeout, metadata=self.metadata or None)
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
