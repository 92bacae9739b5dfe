"""A minimal raw NBD client for protocol tests: every byte it sends is chosen by the test, so it can also
send what real clients never would (bad magic, ranges past the end, a write cut in half)."""

from __future__ import annotations

import itertools
import socket
import struct

from vra_appliance.iofilter import nbd_proto as p

OPEN: list[RawNbd] = []  # closed by an autouse fixture after each test


class RawNbd:
    def __init__(self, path: str, timeout: float = 10.0):
        OPEN.append(self)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.structured = False
        self._handles = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("server closed the connection")
            out += chunk
        return out

    def closed_by_server(self) -> bool:
        """True if the server closed the connection (EOF or reset) without sending anything more."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    # -- handshake ------------------------------------------------------------------------------------
    def greet(self, client_flags: int = p.CLIENT_FLAG_FIXED_NEWSTYLE | p.CLIENT_FLAG_NO_ZEROES) -> int:
        magic, ihaveopt, flags = p.HANDSHAKE.unpack(self.recv_exact(p.HANDSHAKE.size))
        assert (magic, ihaveopt) == (p.NBDMAGIC, p.IHAVEOPT)
        self.sock.sendall(p.CLIENT_FLAGS.pack(client_flags))
        return flags

    def option(self, opt: int, data: bytes = b"", magic: int = p.IHAVEOPT) -> None:
        self.sock.sendall(p.OPTION_HEADER.pack(magic, opt, len(data)) + data)

    def option_reply(self) -> tuple[int, int, bytes]:
        magic, opt, rtype, length = p.OPTION_REPLY.unpack(self.recv_exact(p.OPTION_REPLY.size))
        assert magic == p.OPTION_REPLY_MAGIC
        return opt, rtype, self.recv_exact(length)

    def replies_until_final(self) -> list[tuple[int, bytes]]:
        out = []
        while True:
            _opt, rtype, data = self.option_reply()
            out.append((rtype, data))
            if rtype not in (p.REP_SERVER, p.REP_INFO):
                return out

    def go(self, name: str, structured: bool = False, opt: int = p.OPT_GO) -> list[tuple[int, bytes]]:
        if structured:
            self.option(p.OPT_STRUCTURED_REPLY)
            assert self.option_reply()[1] == p.REP_ACK
            self.structured = True
        raw = name.encode()
        self.option(opt, struct.pack(">I", len(raw)) + raw + struct.pack(">HH", 1, p.INFO_BLOCK_SIZE))
        return self.replies_until_final()

    def connect_export(self, name: str, structured: bool = False) -> dict:
        self.greet()
        replies = self.go(name, structured)
        assert replies[-1][0] == p.REP_ACK, replies
        info = {}
        for rtype, data in replies:
            if rtype == p.REP_INFO:
                (kind,) = struct.unpack_from(">H", data)
                if kind == p.INFO_EXPORT:
                    _, info["size"], info["flags"] = p.INFO_EXPORT_BODY.unpack(data)
                elif kind == p.INFO_BLOCK_SIZE:
                    _, info["min"], info["preferred"], info["max"] = p.INFO_BLOCK_SIZE_BODY.unpack(data)
        return info

    # -- transmission ---------------------------------------------------------------------------------
    def send_request(self, cmd: int, offset: int = 0, length: int = 0, flags: int = 0, data: bytes = b"",
                     magic: int = p.REQUEST_MAGIC) -> int:
        handle = next(self._handles)
        self.sock.sendall(p.REQUEST.pack(magic, flags, cmd, handle, offset, length) + data)
        return handle

    def simple_reply(self) -> tuple[int, int]:
        magic, error, handle = p.SIMPLE_REPLY.unpack(self.recv_exact(p.SIMPLE_REPLY.size))
        assert magic == p.SIMPLE_REPLY_MAGIC, hex(magic)
        return error, handle

    def write(self, offset: int, data: bytes, flags: int = 0) -> int:
        handle = self.send_request(p.CMD_WRITE, offset, len(data), flags, data)
        error, got = self.simple_reply()
        assert got == handle
        return error

    def command(self, cmd: int, offset: int = 0, length: int = 0, flags: int = 0) -> int:
        handle = self.send_request(cmd, offset, length, flags)
        error, got = self.simple_reply()
        assert got == handle
        return error

    def read(self, offset: int, length: int, flags: int = 0) -> tuple[int, bytes]:
        """(error, data) for a read, with simple or structured replies as negotiated."""
        handle = self.send_request(p.CMD_READ, offset, length, flags)
        if not self.structured:
            error, got = self.simple_reply()
            assert got == handle
            return error, (self.recv_exact(length) if error == 0 else b"")
        data, error = b"", 0
        while True:
            magic, cflags, ctype, got, clen = p.STRUCTURED_REPLY.unpack(self.recv_exact(p.STRUCTURED_REPLY.size))
            assert magic == p.STRUCTURED_REPLY_MAGIC and got == handle
            payload = self.recv_exact(clen)
            if ctype == p.REPLY_TYPE_OFFSET_DATA:
                (off,) = struct.unpack_from(">Q", payload)
                assert off == offset + len(data)
                data += payload[8:]
            elif ctype == p.REPLY_TYPE_ERROR:
                (error,) = struct.unpack_from(">I", payload)
            if cflags & p.REPLY_FLAG_DONE:
                return error, data

    def disconnect(self) -> None:
        self.send_request(p.CMD_DISC)
        self.close()
