"""zvr_common.sockserver: a handler per connection, over unix and TCP sockets; stop() ends blocked handlers."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from zvr_common.sockserver import StreamServer


def _echo(ended: list):
    def handle(conn: socket.socket) -> None:
        try:
            while data := conn.recv(4096):  # blocks until the client writes or stop() shuts the socket
                conn.sendall(data.upper())
        finally:
            ended.append(threading.current_thread().name)
    return handle


def test_unix_server_serves_each_connection_and_stop_ends_blocked_handlers(tmp_path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("stale")  # a file left behind by a process that died
    ended: list = []
    server = StreamServer(path, _echo(ended), name="echo")
    server.start()
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    for i, c in enumerate(clients):
        c.connect(str(path))
        c.sendall(f"hi {i}".encode())
        assert c.recv(100) == f"HI {i}".encode()
    server.stop()  # returns only once every handler has returned
    assert len(ended) == 3 and all(name == "echo-conn" for name in ended)
    assert not path.exists()
    for c in clients:
        assert c.recv(100) == b""
        c.close()
    server.stop()  # idempotent


def test_tcp_port_zero_is_resolved_and_a_busy_port_says_so() -> None:
    ended: list = []
    server = StreamServer(("127.0.0.1", 0), _echo(ended), name="echo", what="echo clients")
    server.start()
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    with socket.create_connection((host, port)) as c:
        c.sendall(b"x")
        assert c.recv(10) == b"X"
    busy = StreamServer(("127.0.0.1", port), _echo(ended), name="busy", what="echo clients")
    with pytest.raises(OSError, match=f"cannot listen for echo clients on 127.0.0.1:{port}"):
        busy.start()
    server.stop()
    assert ended == ["echo-conn"]


def test_on_accept_runs_before_the_handler(tmp_path) -> None:
    seen = []
    server = StreamServer(os.fspath(tmp_path / "a.sock"), lambda conn: seen.append("handle"), name="a",
                          on_accept=lambda conn: seen.append("accept"))
    server.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(os.fspath(tmp_path / "a.sock"))
        assert c.recv(1) == b""  # the handler returned: the server closed the connection
    server.stop()
    assert seen == ["accept", "handle"]
