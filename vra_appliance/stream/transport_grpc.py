"""The gRPC Transport (protect side) and the Replication servicer (recovery side), zvr.vra.v1.Replication.

Client: one bidirectional ``Stream`` call per ``open``; requests go through a bounded queue (``send``
blocks when it is full: gRPC flow control pushes back from the receiver), and a reader thread turns the
responses into resolved or failed futures. Server: authenticates the caller (``auth.Security``), reads the
Hello, opens a session on the ``Endpoint``, then a reader thread submits batches while the handler yields
the acks and, at most once, a refusal that ends the call.

grpc.RpcError is translated here: UNAUTHENTICATED and PERMISSION_DENIED become Refused(UNPAIRED_PEER)
(TLS rejected the certificate), everything else TransientError.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

import grpc

from vra_appliance.errors import ApplianceError, TransientError
from vra_appliance.proto.v1 import replication_pb2 as pb
from vra_appliance.proto.v1 import replication_pb2_grpc as pb_grpc
from vra_appliance.stream.transport import (
    PROTOCOL,
    UNPAIRED_PEER,
    Ack,
    Endpoint,
    Hello,
    PendingAcks,
    Refused,
    Welcome,
)
from vra_appliance.stream.wire import Batch, encode_batch_message
from vra_appliance.trust.auth import Security

log = logging.getLogger(__name__)

STREAM_METHOD = "/zvr.vra.v1.Replication/Stream"
MAX_MESSAGE = 128 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's default reconnect backoff grows to 120 s, so after a long link cut replication would stay
    # down for up to two minutes after the link is back; RPO in seconds needs a retry every few seconds.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 3_000),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]

_END = object()


def batch_to_pb(batch: Batch) -> pb.Batch:
    return pb.Batch(
        first_seq=batch.first_seq,
        last_seq=batch.last_seq,
        codec=batch.codec,
        uncompressed_size=batch.uncompressed_size,
        crc32c=batch.crc32c,
        payload=batch.payload,
    )


def batch_from_pb(vpg: str, msg: pb.Batch) -> Batch:
    return Batch(vpg, msg.first_seq, msg.last_seq, msg.codec, msg.uncompressed_size, msg.crc32c, msg.payload)


def refusal_from_pb(msg: pb.Refusal) -> Refused:
    return Refused(msg.reason, msg.message, msg.first_seq, msg.durable_seq)


def refusal_to_pb(exc: Refused) -> pb.RecoverMessage:
    return pb.RecoverMessage(
        refusal=pb.Refusal(reason=exc.reason, message=exc.message, first_seq=exc.first_seq, durable_seq=exc.durable_seq)
    )


def translate(exc: grpc.RpcError) -> ApplianceError:
    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Refused(UNPAIRED_PEER, f"the peer VRA refused our credentials: {detail}")
    return TransientError(f"replication stream failed ({code.name if code else 'unknown'}): {detail}")


class _Requests:
    """The request iterator of one call: a bounded queue that ends on ``_END`` or when closed."""

    def __init__(self, maxsize: int) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.closed = threading.Event()

    def __iter__(self):
        while True:
            try:
                item = self.q.get(timeout=0.5)
            except queue.Empty:
                if self.closed.is_set():
                    return
                continue
            if item is _END:
                return
            yield item

    def put(self, item, failed: PendingAcks) -> bool:
        while not self.closed.is_set() and failed.failed is None:
            try:
                self.q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self.closed.set()
        try:
            self.q.put_nowait(_END)
        except queue.Full:
            pass


class GrpcTransport:
    """Transport over zvr.vra.v1.Replication/Stream to ``address`` (the recovery VRA, id ``peer_id``)."""

    def __init__(
        self,
        address: str,
        *,
        peer_id: str = "",
        security: Security | None = None,
        queue_batches: int = 8,
        open_timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.peer_id = peer_id
        self.security = security or Security()
        self.queue_batches = queue_batches
        self.open_timeout = open_timeout
        self._channel: grpc.Channel | None = None
        self._generation = 0  # of the security's trust bundle when the channel was made
        self._call = None
        self._requests: _Requests | None = None
        self._acks = PendingAcks()
        self._reader: threading.Thread | None = None
        self._vpg = ""

    def _stream(self):
        """The Stream method with requests passed as already-serialized bytes (see wire.encode_batch_message)."""
        if self._channel is not None and self._generation != self.security.generation:
            self._channel.close()  # the trust bundle changed: handshake again with the new roots
            self._channel = None
        if self._channel is None:
            self._generation = self.security.generation
            self._channel = self.security.channel(self.address, self.peer_id, CHANNEL_OPTIONS)
        return self._channel.stream_stream(
            STREAM_METHOD, request_serializer=bytes, response_deserializer=pb.RecoverMessage.FromString
        )

    def open(self, hello: Hello) -> Welcome:
        self.close()
        self._vpg = hello.vpg
        requests = _Requests(self.queue_batches)
        acks = PendingAcks()
        requests.q.put(
            pb.ProtectMessage(
                hello=pb.Hello(
                    vpg=hello.vpg, peer_id=hello.peer_id, resume_from=hello.resume_from,
                    protocol_version=hello.protocol_version,
                )
            ).SerializeToString()
        )
        call = self._stream()(iter(requests), metadata=self.security.metadata())
        first: Future = Future()
        reader = threading.Thread(
            target=self._read, args=(call, acks, first), name=f"grpc-acks-{hello.vpg}", daemon=True
        )
        self._call, self._requests, self._acks, self._reader = call, requests, acks, reader
        reader.start()
        try:
            result = first.result(timeout=self.open_timeout)
        except TimeoutError:
            self.close()
            raise TransientError(f"no answer from the recovery VRA at {self.address} within {self.open_timeout} s") from None
        except ApplianceError:
            self.close()
            raise
        return result

    @staticmethod
    def _read(call, acks: PendingAcks, first: Future) -> None:
        try:
            for msg in call:
                kind = msg.WhichOneof("kind")
                if kind == "ack":
                    acks.ack(Ack(msg.ack.durable_seq))
                elif kind == "welcome":
                    w = msg.welcome
                    if not first.done():
                        first.set_result(Welcome(w.durable_seq, w.recover_id, w.protocol_version, w.journal_epoch))
                elif kind == "refusal":
                    exc = refusal_from_pb(msg.refusal)
                    if not first.done():
                        first.set_exception(exc)
                    acks.fail(exc)
                    return
            exc: ApplianceError = TransientError("the recovery VRA ended the stream")
        except grpc.RpcError as err:
            exc = translate(err)
        if not first.done():
            first.set_exception(exc)
        acks.fail(exc)

    def send(self, batch: Batch) -> Future[Ack]:
        acks, requests = self._acks, self._requests
        fut = acks.add(batch.last_seq)
        if requests is None:
            acks.fail(TransientError("stream is not open"))
            return fut
        requests.put(encode_batch_message(batch), acks)
        return fut

    def close(self) -> None:
        call, requests, reader = self._call, self._requests, self._reader
        self._call = self._requests = self._reader = None
        if requests is not None:
            requests.close()
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.join(timeout=5.0)
        self._acks.fail(TransientError("stream closed"))

    def shutdown(self) -> None:
        """Close the stream and the channel (the transport is not used again)."""
        self.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class ReplicationServicer(pb_grpc.ReplicationServicer):
    """The recovery VRA's zvr.vra.v1.Replication service over an ``Endpoint``."""

    def __init__(self, endpoint: Endpoint, security: Security | None = None) -> None:
        self.endpoint = endpoint
        self.security = security or Security()

    def Stream(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if first.WhichOneof("kind") != "hello":
            yield refusal_to_pb(Refused(PROTOCOL, "the first message of a stream must be a Hello"))
            return
        h = first.hello
        hello = Hello(h.vpg, h.peer_id, h.resume_from, h.protocol_version)
        peer = self.security.identify(context, hello.peer_id)
        responses: queue.Queue = queue.Queue()

        def on_refusal(exc: Refused) -> None:
            responses.put(exc)

        try:
            session = self.endpoint.open_session(hello, peer, lambda ack: responses.put(ack), on_refusal)
        except Refused as exc:
            log.info("replication stream of VPG %s from %s refused: %s", hello.vpg, hello.peer_id, exc)
            yield refusal_to_pb(exc)
            return
        w = session.welcome
        yield pb.RecoverMessage(
            welcome=pb.Welcome(durable_seq=w.durable_seq, recover_id=w.recover_id, protocol_version=w.protocol_version,
                               journal_epoch=w.journal_epoch)
        )

        def read() -> None:
            try:
                for msg in request_iterator:
                    if msg.WhichOneof("kind") != "batch":
                        on_refusal(Refused(PROTOCOL, "only batches may follow the Hello"))
                        return
                    session.submit(batch_from_pb(hello.vpg, msg.batch))
            except grpc.RpcError:
                pass
            except Exception:
                log.exception("VPG %s: failed to take a batch from %s", hello.vpg, hello.peer_id)
                on_refusal(Refused(PROTOCOL, "the recovery VRA failed to take the batch"))
                return
            responses.put(_END)

        reader = threading.Thread(target=read, name=f"grpc-batches-{hello.vpg}", daemon=True)
        reader.start()
        try:
            while context.is_active():
                try:
                    item = responses.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                if isinstance(item, Refused):
                    yield refusal_to_pb(item)
                    return
                # Coalesce queued acks: only the highest matters.
                while True:
                    try:
                        nxt = responses.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(nxt, Ack):
                        item = nxt if nxt.durable_seq > item.durable_seq else item
                        continue
                    responses.put(nxt)  # a refusal or the end: handled on the next turn
                    break
                yield pb.RecoverMessage(ack=pb.Ack(durable_seq=item.durable_seq))
        finally:
            session.close()
