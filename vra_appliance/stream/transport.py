"""The seam between a protect VRA and the recovery VRA: ``Transport`` (sending side) and ``Endpoint``
(receiving side), with an in-process implementation; the gRPC one is in ``transport_grpc``.

Errors (vra_appliance.errors draws the whole tree; what the sender does about each)::

    TransientError              retry: reconnect with back-off, resend from the peer's durable seq
                                (connection lost, peer not up yet, call cancelled)
    Refused(reason)             the peer said no; ``Refused.kind`` tells what to do:
          "resend"              BAD_CHECKSUM, GAP: reconnect now and resend from Welcome.durable_seq + 1
          "backoff"             JOURNAL_FULL: keep the buffer, retry later (the recovery site reports it)
          "permanent"           UNKNOWN_VPG, UNPAIRED_PEER, PROTOCOL: stop and report; configuration is wrong
          "corruption"          JOURNAL_ERROR: the recovery journal needs an operator (or a resync)

grpc.RpcError never leaves ``transport_grpc``: it is translated there, with ``raise ... from``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from vra_appliance.errors import ApplianceError, TransientError
from vra_appliance.proto.v1 import replication_pb2 as pb
from vra_appliance.stream.wire import Batch

PROTOCOL_VERSION = 1

BAD_CHECKSUM = pb.BAD_CHECKSUM
UNKNOWN_VPG = pb.UNKNOWN_VPG
UNPAIRED_PEER = pb.UNPAIRED_PEER
JOURNAL_FULL = pb.JOURNAL_FULL
GAP = pb.GAP
PROTOCOL = pb.PROTOCOL
JOURNAL_ERROR = pb.JOURNAL_ERROR

_KIND = {
    BAD_CHECKSUM: "resend",
    GAP: "resend",
    JOURNAL_FULL: "backoff",
    UNKNOWN_VPG: "permanent",
    UNPAIRED_PEER: "permanent",
    PROTOCOL: "permanent",
    JOURNAL_ERROR: "corruption",
}


class Refused(ApplianceError):
    """The recovery VRA refused a hello or a batch; the call is over. ``kind`` is the branch of the
    exception tree the refusal belongs to (resend and backoff: transient; permanent; corruption)."""

    def __init__(self, reason: int, message: str = "", first_seq: int = 0, durable_seq: int = 0) -> None:
        self.reason = reason
        self.message = message
        self.first_seq = first_seq
        self.durable_seq = durable_seq
        super().__init__(f"{self.reason_name}: {message}" if message else self.reason_name)

    @property
    def reason_name(self) -> str:
        return pb.RefusalReason.Name(self.reason) if self.reason in _KIND else str(self.reason)

    @property
    def kind(self) -> str:
        return _KIND.get(self.reason, "permanent")


@dataclass(frozen=True)
class Hello:
    vpg: str
    peer_id: str
    # Oldest stream seq the sender still holds; 0: a fresh sender that holds nothing and adopts the
    # receiver's position (Welcome.durable_seq + 1 is its next seq).
    resume_from: int = 0
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Welcome:
    durable_seq: int
    recover_id: str = ""
    protocol_version: int = PROTOCOL_VERSION
    # The recovery journal's epoch, new whenever the VPG's journal is created or discarded; "" = unknown (an
    # older recovery VRA). A change means the receiver lost records it had acknowledged: delta sync.
    journal_epoch: str = ""


@dataclass(frozen=True)
class Ack:
    """Every record of the stream up to ``durable_seq`` is durable in the recovery journal."""

    durable_seq: int


class Transport(Protocol):
    """One replication stream of one VPG from this protect VRA to the VPG's recovery VRA.

    - ``open(hello)`` starts a stream (closing any previous one) and returns the peer's durable position.
      Raises Refused (UNKNOWN_VPG, UNPAIRED_PEER, GAP...) or TransientError.
    - ``send(batch)`` queues the batch behind those already sent and returns a future that resolves to
      the first Ack covering ``batch.last_seq``, or fails with Refused / TransientError when the stream
      ends first (then every later future fails too). It may block while the peer pushes back.
      Batches must be sent in seq order; sending one again after ``open`` is how resend works, and is
      idempotent on the peer (records at or below its durable position are ignored).
    - ``close()`` ends the stream; pending futures fail with TransientError. Idempotent.
    """

    def open(self, hello: Hello) -> Welcome: ...

    def send(self, batch: Batch) -> Future[Ack]: ...

    def close(self) -> None: ...


class Session(Protocol):
    """The receiving side of one open stream (what ``Endpoint.open_session`` returns).

    ``submit(batch)`` checks and takes a batch (may block to push back); acks and a refusal are delivered
    through the callbacks given to ``open_session``, from any thread. After ``on_refusal`` the session is
    over. ``close()`` is idempotent."""

    welcome: Welcome

    def submit(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


class Endpoint(Protocol):
    """The recovery VRA as both transports see it.

    ``open_session(hello, peer, on_ack, on_refusal)``: ``peer`` is the authenticated identity of the caller
    (the TLS certificate's name, or the hello's peer id once the pairing secret matched; None when the
    caller could not be authenticated). Raises Refused for an unknown VPG or an unpaired peer."""

    def open_session(
        self,
        hello: Hello,
        peer: str | None,
        on_ack: Callable[[Ack], None],
        on_refusal: Callable[[Refused], None],
    ) -> Session: ...


class PendingAcks:
    """Per-batch futures of one stream, resolved by cumulative acks (shared by both transports)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[int, Future[Ack]]] = []
        self._failed: BaseException | None = None

    def add(self, last_seq: int) -> Future[Ack]:
        fut: Future[Ack] = Future()
        with self._lock:
            if self._failed is not None:
                fut.set_exception(self._failed)
                return fut
            self._pending.append((last_seq, fut))
        return fut

    def ack(self, ack: Ack) -> None:
        with self._lock:
            done = [f for s, f in self._pending if s <= ack.durable_seq]
            self._pending = [(s, f) for s, f in self._pending if s > ack.durable_seq]
        for f in done:
            if not f.done():
                f.set_result(ack)

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._failed is None:
                self._failed = exc
            pending, self._pending = self._pending, []
        for _, f in pending:
            if not f.done():
                f.set_exception(exc)

    @property
    def failed(self) -> BaseException | None:
        return self._failed


class InProcessTransport:
    """A Transport straight into an Endpoint in the same process (tests, and a VRA replicating to itself).

    ``peer`` is the identity the endpoint sees, as mutual TLS would have established it."""

    def __init__(self, endpoint: Endpoint, peer: str | None) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self._session: Session | None = None
        self._acks = PendingAcks()

    def open(self, hello: Hello) -> Welcome:
        self.close()
        acks = PendingAcks()
        self._acks = acks
        self._session = self.endpoint.open_session(hello, self.peer, acks.ack, acks.fail)
        return self._session.welcome

    def send(self, batch: Batch) -> Future[Ack]:
        fut = self._acks.add(batch.last_seq)
        if self._session is None:
            self._acks.fail(TransientError("stream is not open"))
            return fut
        if self._acks.failed is None:
            self._session.submit(batch)
        return fut

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
        self._acks.fail(TransientError("stream closed"))
