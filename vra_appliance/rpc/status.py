"""The one mapping from the appliance's exception tree (vra_appliance.errors) to gRPC status codes, used by
every servicer that answers a domain error with a status (Control, the delta sync's Checksums).

A domain error's branch picks the code: not found (an unknown VPG, volume or image) NOT_FOUND, the rest of
permanent FAILED_PRECONDITION, transient UNAVAILABLE, corruption DATA_LOSS. Anything that is not an
``ApplianceError`` is a bug and answers INTERNAL, so that a KeyError from a bug is never mistaken for
"no such VPG" by the caller.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from vra_appliance import errors as E

log = logging.getLogger(__name__)

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [  # most specific first
    (E.UnknownVpgError, grpc.StatusCode.NOT_FOUND),
    (E.UnknownVolumeError, grpc.StatusCode.NOT_FOUND),
    (E.ImageNotOpenError, grpc.StatusCode.NOT_FOUND),
    (E.PermanentError, grpc.StatusCode.FAILED_PRECONDITION),
    (E.CorruptionError, grpc.StatusCode.DATA_LOSS),
    (E.TransientError, grpc.StatusCode.UNAVAILABLE),
    (E.ApplianceError, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The status a servicer answers ``exc`` with."""
    return next((code for cls, code in _CODES if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)


def abort(context: grpc.ServicerContext, exc: BaseException, *, with_class: bool = False) -> NoReturn:
    """End the call with ``exc``'s status. ``with_class``: details are ``"ClassName: message"`` for a
    client that raises the same class again (sync.grpc_peer); otherwise the message alone (what the ZVM
    shows). A bug's details say only that it is one; its traceback goes to the VRA's log."""
    code = status_code(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("a gRPC call failed with a bug: %s", exc, exc_info=exc)
        context.abort(code, f"internal error of the VRA ({type(exc).__name__}); see its log")
    context.abort(code, f"{type(exc).__name__}: {exc}" if with_class else str(exc))
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover
