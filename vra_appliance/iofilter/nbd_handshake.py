"""The NBD fixed newstyle handshake: option haggling up to the choice of an export.

Supports NBD_OPT_EXPORT_NAME, ABORT, LIST, INFO, GO and STRUCTURED_REPLY; every other option gets
NBD_REP_ERR_UNSUP, so clients fall back (no TLS, no metadata contexts). Block size constraints
(NBD_INFO_BLOCK_SIZE) are sent with every INFO/GO reply. A client that breaks a MUST of the protocol
(bad magic, unknown client flags, an absurd option length) is disconnected: `NbdProtocolError`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from vra_appliance.errors import NbdProtocolError
from vra_appliance.iofilter import nbd_proto as p
from vra_appliance.iofilter.nbd_backend import ExportBackend


@dataclass
class Session:
    """What the handshake agreed: the export and the reply style for the transmission phase."""

    export_name: str
    backend: ExportBackend
    structured: bool
    flags: int


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes; ConnectionError if the peer closes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("client closed the connection during the handshake")
        got += k
    return bytes(buf)


def transmission_flags(backend: ExportBackend, structured: bool) -> int:
    flags = p.TFLAG_HAS_FLAGS | p.TFLAG_SEND_FLUSH
    if backend.read_only:
        flags |= p.TFLAG_READ_ONLY
    else:
        flags |= p.TFLAG_SEND_FUA | p.TFLAG_SEND_TRIM | p.TFLAG_SEND_WRITE_ZEROES
    if getattr(backend, "can_multi_conn", False):
        flags |= p.TFLAG_CAN_MULTI_CONN
    if structured:
        flags |= p.TFLAG_SEND_DF  # reads are never fragmented, so DF is always honoured
    return flags


def _reply(sock: socket.socket, option: int, rtype: int, data: bytes = b"") -> None:
    sock.sendall(p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, option, rtype, len(data)) + data)


def _error(sock: socket.socket, option: int, rtype: int, message: str) -> None:
    _reply(sock, option, rtype, message.encode()[:4096])


def negotiate(sock: socket.socket, lookup: Callable[[str], ExportBackend | None],
              list_names: Callable[[], list[str]]) -> Session | None:
    """Run the handshake on a fresh connection. None: the client aborted or asked for an unknown export
    with NBD_OPT_EXPORT_NAME (which has no error reply, so the connection is closed)."""
    sock.sendall(p.HANDSHAKE.pack(p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES))
    (client_flags,) = p.CLIENT_FLAGS.unpack(recv_exact(sock, 4))
    if client_flags & ~(p.CLIENT_FLAG_FIXED_NEWSTYLE | p.CLIENT_FLAG_NO_ZEROES):
        raise NbdProtocolError(f"unknown client flags {client_flags:#x}")
    no_zeroes = bool(client_flags & p.CLIENT_FLAG_NO_ZEROES)
    structured = False
    while True:
        magic, option, length = p.OPTION_HEADER.unpack(recv_exact(sock, p.OPTION_HEADER.size))
        if magic != p.IHAVEOPT:
            raise NbdProtocolError(f"bad option magic {magic:#x}")
        if length > p.MAX_OPTION_LENGTH:
            raise NbdProtocolError(f"option {option} has {length} bytes of data; at most "
                                 f"{p.MAX_OPTION_LENGTH} are accepted")
        data = recv_exact(sock, length)

        if option == p.OPT_EXPORT_NAME:
            backend = lookup(data.decode("utf-8", "replace"))
            if backend is None:
                return None
            flags = transmission_flags(backend, structured)
            reply = p.EXPORT_NAME_REPLY.pack(backend.size, flags)
            sock.sendall(reply if no_zeroes else reply + bytes(124))
            return Session(data.decode(), backend, structured, flags)

        if option == p.OPT_ABORT:
            try:
                _reply(sock, option, p.REP_ACK)
            except OSError:
                pass  # the client may close without waiting for the ACK
            return None

        if option == p.OPT_LIST:
            if length:
                _error(sock, option, p.REP_ERR_INVALID, "NBD_OPT_LIST takes no data")
                continue
            for name in list_names():
                raw = name.encode()
                _reply(sock, option, p.REP_SERVER, struct.pack(">I", len(raw)) + raw)
            _reply(sock, option, p.REP_ACK)
            continue

        if option == p.OPT_STRUCTURED_REPLY:
            if length:
                _error(sock, option, p.REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data")
                continue
            structured = True
            _reply(sock, option, p.REP_ACK)
            continue

        if option in (p.OPT_INFO, p.OPT_GO):
            session = _info_or_go(sock, option, data, lookup, structured)
            if session is not None and option == p.OPT_GO:
                return session
            continue

        _error(sock, option, p.REP_ERR_UNSUP, f"option {option} is not supported by this server")


def _info_or_go(sock: socket.socket, option: int, data: bytes,
                lookup: Callable[[str], ExportBackend | None], structured: bool) -> Session | None:
    """Answer NBD_OPT_INFO / NBD_OPT_GO; returns the session when the export exists."""
    if len(data) < 6:
        _error(sock, option, p.REP_ERR_INVALID, "INFO/GO data too short")
        return None
    (name_len,) = struct.unpack_from(">I", data, 0)
    if 4 + name_len + 2 > len(data):
        _error(sock, option, p.REP_ERR_INVALID, "INFO/GO export name length exceeds the option data")
        return None
    name = data[4:4 + name_len].decode("utf-8", "replace")
    (n_req,) = struct.unpack_from(">H", data, 4 + name_len)
    if 4 + name_len + 2 + 2 * n_req != len(data):
        _error(sock, option, p.REP_ERR_INVALID, "INFO/GO information request count does not match its length")
        return None
    requests = struct.unpack_from(f">{n_req}H", data, 6 + name_len)
    backend = lookup(name)
    if backend is None:
        _error(sock, option, p.REP_ERR_UNKNOWN, f"no export named {name!r}; NBD_OPT_LIST shows the exports")
        return None
    flags = transmission_flags(backend, structured)
    _reply(sock, option, p.REP_INFO, p.INFO_EXPORT_BODY.pack(p.INFO_EXPORT, backend.size, flags))
    _reply(sock, option, p.REP_INFO, p.INFO_BLOCK_SIZE_BODY.pack(
        p.INFO_BLOCK_SIZE, p.MIN_BLOCK_SIZE, p.PREFERRED_BLOCK_SIZE, p.MAX_PAYLOAD))
    if p.INFO_NAME in requests:
        _reply(sock, option, p.REP_INFO, struct.pack(">H", p.INFO_NAME) + backend.name.encode())
    _reply(sock, option, p.REP_ACK)
    return Session(name, backend, structured, flags)
