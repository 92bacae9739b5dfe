"""A reusable NBD server: listeners, the export registry and one thread per client connection.

`NbdServer` serves any `ExportBackend` (docs/CONTRACTS.md section 1) on a unix socket and/or TCP. The IO
filter serves protected volumes through it; the recovery side serves point-in-time images through it.
Exports can be added and removed while the server runs; removing one disconnects its clients first.

    server = NbdServer({"vol-1": FileBackend("/ds/vm/vm-flat.vmdk", name="vol-1")}, unix_path="/run/nbd.sock")
    server.start()
    ...
    server.stop()           # disconnects clients, closes the backends

The protocol pieces live beside it: `nbd_proto` (constants), `nbd_handshake` (option haggling),
`nbd_transmission` (requests and replies), `nbd_backend` (the protocol and `FileBackend`).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
from dataclasses import dataclass, field

from vra_appliance.errors import NbdProtocolError
from vra_appliance.iofilter.nbd_backend import ExportBackend, FileBackend
from vra_appliance.iofilter.nbd_handshake import negotiate
from vra_appliance.iofilter.nbd_transmission import ConnectionStats, Transmission
from zvr_common.sockserver import StreamServer

__all__ = ["ExportBackend", "FileBackend", "NbdServer", "parse_hostport"]

log = logging.getLogger(__name__)

DEFAULT_NBD_PORT = 10809
_HANDSHAKE_TIMEOUT_S = 30.0  # a client that connects and says nothing is dropped; transmission has none


def parse_hostport(value: str | tuple[str, int], default_port: int = DEFAULT_NBD_PORT) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` or a tuple -> (host, port)."""
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        return value.strip("[]"), default_port
    if not port.isdigit():
        raise ValueError(f"bad address {value!r}: expected HOST:PORT, e.g. 127.0.0.1:{default_port}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class _Export:
    backend: ExportBackend
    clients: set = field(default_factory=set)  # live _Client objects
    retired: ConnectionStats = field(default_factory=ConnectionStats)


class _Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.stats = ConnectionStats()
        self.thread: threading.Thread | None = None

    def kick(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class NbdServer:
    """Serves named exports over NBD. ``tcp`` is ``"host:port"`` or ``(host, port)``; port 0 picks one."""

    def __init__(self, exports: dict[str, ExportBackend] | None = None, unix_path: str | os.PathLike | None = None,
                 tcp: str | tuple[str, int] | None = None):
        if unix_path is None and tcp is None:
            raise ValueError("NbdServer needs a unix socket path, a TCP address, or both")
        self.unix_path = os.fspath(unix_path) if unix_path is not None else None
        self._tcp_want = parse_hostport(tcp) if tcp is not None else None
        self.tcp_address: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._exports: dict[str, _Export] = {}
        self._pending: set[_Client] = set()  # connections still in the handshake
        self._servers: list[StreamServer] = []
        self._stopping = False
        for name, backend in (exports or {}).items():
            self.add_export(backend, name)

    # -- exports --------------------------------------------------------------------------------------
    def add_export(self, backend: ExportBackend, name: str | None = None) -> None:
        name = name if name is not None else backend.name
        with self._lock:
            if name in self._exports:
                raise ValueError(f"an export named {name!r} is already served; remove it first")
            self._exports[name] = _Export(backend)

    def remove_export(self, name: str, close: bool = True) -> None:
        """Stop serving ``name``: its clients are disconnected (waited for), then the backend is closed."""
        with self._lock:
            export = self._exports.pop(name, None)
        if export is None:
            raise KeyError(f"no export named {name!r}")
        self._disconnect(export)
        if close:
            export.backend.close()

    def export_names(self) -> list[str]:
        with self._lock:
            return sorted(self._exports)

    def _lookup(self, name: str) -> ExportBackend | None:
        with self._lock:
            if name == "" and len(self._exports) == 1:  # the default export, when there is no ambiguity
                return next(iter(self._exports.values())).backend
            export = self._exports.get(name)
            return export.backend if export else None

    def counters(self) -> dict[str, dict[str, int]]:
        """Per export: reads, writes, bytes_read, bytes_written, flushes, trims, zeroes, errors, clients."""
        out = {}
        with self._lock:
            for name, export in self._exports.items():
                total = ConnectionStats()
                total.add(export.retired)
                for client in export.clients:
                    total.add(client.stats)
                out[name] = {**total.as_dict(), "clients": len(export.clients)}
        return out

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.unix_path is not None:
            _remove_stale_socket(self.unix_path)
            self._listen(self.unix_path)
        if self._tcp_want is not None:
            try:
                self.tcp_address = self._listen(self._tcp_want)
            except OSError:
                self.stop()
                raise

    def _listen(self, address):
        server = StreamServer(address, self._accept, name="nbd", what="NBD clients", backlog=64,
                              on_accept=_no_delay)
        server.start()
        self._servers.append(server)
        return server.address

    def stop(self, close_exports: bool = True) -> None:
        """Stop listening, disconnect every client (waiting for their threads), close the backends."""
        self._stopping = True
        for server in self._servers:  # every connection, in its handshake or serving an export, ends
            server.stop()
        self._servers.clear()
        with self._lock:
            self._pending.clear()
            exports = list(self._exports.items())
            self._exports.clear()
        for _name, export in exports:
            self._disconnect(export)
            if close_exports:
                export.backend.close()
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def _disconnect(self, export: _Export) -> None:
        with self._lock:
            clients = list(export.clients)
        for client in clients:
            client.kick()
        for client in clients:
            if client.thread is not None and client.thread is not threading.current_thread():
                client.thread.join()

    # -- connections ----------------------------------------------------------------------------------
    def _accept(self, sock: socket.socket) -> None:
        client = _Client(sock)
        client.thread = threading.current_thread()
        with self._lock:
            if self._stopping:
                return
            self._pending.add(client)
        self._serve(client)

    def _serve(self, client: _Client) -> None:
        sock = client.sock
        export: _Export | None = None
        try:
            sock.settimeout(_HANDSHAKE_TIMEOUT_S)
            session = negotiate(sock, self._lookup, self.export_names)
            if session is None:
                return
            sock.settimeout(None)
            with self._lock:
                self._pending.discard(client)
                export = self._exports.get(session.export_name) or next(
                    (e for e in self._exports.values() if e.backend is session.backend), None)
                if export is None or self._stopping:
                    return  # removed while the handshake finished
                export.clients.add(client)
            Transmission(sock, session.backend, session.structured, client.stats).run()
        except NbdProtocolError as exc:
            log.info("NBD client dropped: %s", exc)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.debug("NBD client connection ended: %s", exc)
        finally:
            with self._lock:
                self._pending.discard(client)
                if export is not None and client in export.clients:
                    export.clients.discard(client)
                    export.retired.add(client.stats)
            sock.close()


def _no_delay(sock: socket.socket) -> None:
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; choose another --unix path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left over from a process that died
        return
    finally:
        probe.close()
    raise FileExistsError(f"another process is serving on {path}; stop it or choose another --unix path")
