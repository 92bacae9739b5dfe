"""The server side of the delta sync's checksum exchange (``/zvr.vra.sync.v1.Checksums/Call``; the format
and the client are in vra_appliance.sync.grpc_peer): a thin handler that decodes the request, asks the VPG's
recovery side, and answers a domain error with the one status mapping (vra_appliance.rpc.status), details
``"ClassName: message"`` so that the client raises the same class again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import grpc

from vra_appliance import errors as E
from vra_appliance.rpc.status import abort
from vra_appliance.sync.delta import ReplicaChecksums
from vra_appliance.sync.grpc_peer import SERVICE
from vra_appliance.sync.messages import CloseRequest, DeltaOpen, GroupRequest, LeafRequest, decode


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
        except E.ApplianceError as exc:
            abort(context, exc, with_class=True)
        except OSError as exc:  # reading the recovery side's volume
            abort(context, E.TransientError(f"reading the recovery side's volume failed ({exc}); the sync runs "
                                            "again"), with_class=True)

    return grpc.method_handlers_generic_handler(SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(call)})
