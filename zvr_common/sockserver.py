"""The one threaded stream server (unix socket or TCP) of the product, on the standard library's
`socketserver`: one daemon thread per connection, calling ``handle(conn)`` with the connected socket.

What the servers built on it share, and each used to write again:

- ``start()`` binds (a stale unix socket file is removed first; TCP reuses the address) and serves in a
  thread; a bind error says which address and what to do. ``address`` is the bound address afterwards
  (a TCP port 0 resolved).
- ``stop()`` stops accepting, shuts down every open connection (so a handler blocked in a read returns),
  waits for the handlers' threads, and removes the unix socket file. Idempotent.

The connection is closed after ``handle`` returns; ``handle`` may close it earlier.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import Callable

# How long stop() may wait for the accept loop to notice (socketserver polls for its shutdown flag).
POLL_INTERVAL_S = 0.05


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.handle_connection(self.request)


class _Threading(socketserver.ThreadingMixIn):
    daemon_threads = True

    def setup_tracking(self, handle: Callable[[socket.socket], None], on_accept) -> None:
        self.handle_connection = handle
        self.on_accept = on_accept
        self.open: dict[socket.socket, threading.Thread] = {}
        self.guard = threading.Lock()

    def process_request(self, request, client_address) -> None:
        # Tracked here, in the accepting thread, so that stop() (after the accept loop ended) sees them all.
        if self.on_accept is not None:
            self.on_accept(request)
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             name=f"{self.name}-conn", daemon=True)
        with self.guard:
            self.open[request] = t
        t.start()

    def shutdown_request(self, request) -> None:
        with self.guard:
            self.open.pop(request, None)
        try:
            request.close()
        except OSError:
            pass


class _Unix(_Threading, socketserver.UnixStreamServer):
    pass


class _Tcp(_Threading, socketserver.TCPServer):
    allow_reuse_address = True


class _Tcp6(_Tcp):
    address_family = socket.AF_INET6


class StreamServer:
    """Serve ``address`` (a unix socket path, or a ``(host, port)`` tuple) with ``handle(conn)`` per
    connection. ``what`` names the clients in a bind error ("IO filters", "NBD clients");
    ``on_accept(conn)`` runs in the accepting thread first (socket options)."""

    def __init__(self, address: str | os.PathLike | tuple[str, int], handle: Callable[[socket.socket], None], *,
                 name: str, what: str = "connections", backlog: int = 16,
                 on_accept: Callable[[socket.socket], None] | None = None) -> None:
        self.address: str | tuple[str, int] = address if isinstance(address, tuple) else os.fspath(address)
        self.name = name
        self.what = what
        self.backlog = backlog
        self._handle = handle
        self._on_accept = on_accept
        self._server: _Threading | None = None
        self._thread: threading.Thread | None = None

    @property
    def is_unix(self) -> bool:
        return not isinstance(self.address, tuple)

    def start(self) -> None:
        if self.is_unix:
            if os.path.exists(self.address):
                os.unlink(self.address)
            cls = _Unix
        else:
            cls = _Tcp6 if ":" in self.address[0] else _Tcp
        cls.request_queue_size = self.backlog
        try:
            server = cls(self.address, _Handler)
        except OSError as exc:
            where = self.address if self.is_unix else f"{self.address[0]}:{self.address[1]}"
            raise OSError(exc.errno, f"cannot listen for {self.what} on {where}: {exc.strerror}; "
                          "pick another address or stop what uses it") from exc
        server.name = self.name
        server.setup_tracking(self._handle, self._on_accept)
        if not self.is_unix:
            self.address = server.server_address[:2]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(POLL_INTERVAL_S,), name=self.name,
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # the accept loop ends; no new connection is tracked after this
        server.server_close()
        with server.guard:
            open_now = dict(server.open)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in open_now.values():
            if t is not threading.current_thread():
                t.join()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.is_unix and os.path.exists(self.address):
            os.unlink(self.address)
