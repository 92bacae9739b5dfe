"""The WAN emulator: bytes intact, latency and bandwidth as set, cuts (freeze, reset) and restores, gRPC
streams through it, and its control socket. Bounds are generous: these assert behaviour, not speed."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from zvm.lab.wan import WanControl, WanEmulator


class EchoServer:
    """Echoes every byte back on each connection (a thread per connection)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture
def echo():
    srv = EchoServer()
    yield srv
    srv.close()


@pytest.fixture
def wan(echo):
    emu = WanEmulator(("127.0.0.1", 0), echo.address).start()
    yield emu
    emu.stop()


def connect(wan: WanEmulator, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(wan.address, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(65536, n - len(buf)))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def roundtrip(s: socket.socket, payload: bytes) -> bytes:
    """Send and read back the echo concurrently (so neither side's buffers deadlock)."""
    sender = threading.Thread(target=s.sendall, args=(payload,))
    sender.start()
    got = recv_exactly(s, len(payload))
    sender.join()
    return got


def test_bytes_arrive_intact_both_ways(wan):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with connect(wan) as s:
        got = roundtrip(s, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    st = wan.status()
    assert st["directions"]["up"]["bytes"] == len(payload) == st["directions"]["down"]["bytes"]


def ping_rtts(s: socket.socket, n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        t = time.monotonic()
        s.sendall(b"x")
        recv_exactly(s, 1)
        out.append(time.monotonic() - t)
    return out


def test_latency_applies_per_direction_and_changes_live(wan):
    with connect(wan) as s:
        wan.set(latency_ms=60)
        rtts = ping_rtts(s)
        assert min(rtts) >= 0.115  # 60 ms each way, less timer slack
        assert statistics.median(rtts) < 1.0
        wan.set(latency_ms=60, direction="up")
        wan.set(latency_ms=0, direction="down")
        assert min(ping_rtts(s)) >= 0.055
        wan.set(latency_ms=0)
        assert statistics.median(ping_rtts(s)) < 0.1


def test_bandwidth_cap_paces_the_stream(wan):
    wan.set(bandwidth_mbps=8)  # 1 MB/s each way
    payload = os.urandom(1_500_000)
    with connect(wan) as s:
        t = time.monotonic()
        got = roundtrip(s, payload)
        elapsed = time.monotonic() - t
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert elapsed >= 1.3, f"1.5 MB through 8 Mbit/s took {elapsed:.2f} s"
    assert elapsed < 15


def test_freeze_cut_stops_traffic_and_restore_resumes_it(wan):
    with connect(wan) as s:
        assert roundtrip(s, b"before") == b"before"
        wan.cut(mode="freeze")
        s.sendall(b"during the cut")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)
        held = connect(wan)  # new connections are held, not refused
        held.sendall(b"held")
        held.settimeout(0.2)
        with pytest.raises(TimeoutError):
            held.recv(100)
        assert wan.status()["state"] == "cut:freeze"
        wan.restore()
        s.settimeout(10)
        held.settimeout(10)
        assert recv_exactly(s, len(b"during the cut")) == b"during the cut"
        assert recv_exactly(held, 4) == b"held"
        held.close()
    assert wan.status()["counters"]["held"] == 1


def test_reset_cut_resets_connections_and_refuses_new_ones(wan):
    with connect(wan) as s:
        assert roundtrip(s, b"hello") == b"hello"
        wan.cut(mode="reset")
        with pytest.raises(ConnectionResetError):
            s.sendall(b"x")
            s.recv(10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(wan.address, timeout=5)
    wan.restore()
    with connect(wan) as s2:
        assert roundtrip(s2, b"back") == b"back"
    assert wan.status()["counters"]["reset"] >= 1


def test_freeze_cut_can_refuse_new_connections(wan):
    wan.cut(mode="freeze", new="refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(wan.address, timeout=5)
    wan.restore()
    with connect(wan) as s:
        assert roundtrip(s, b"ok") == b"ok"


def test_bad_settings_are_refused(wan):
    with pytest.raises(ValueError, match="cut mode"):
        wan.cut(mode="unplug")
    with pytest.raises(ValueError, match="latency_ms"):
        wan.set(latency_ms=-1)


# -- gRPC (HTTP/2) through the emulator -----------------------------------------------------------------

def _echo_stream(request_iterator, context):
    yield from request_iterator


@pytest.fixture
def grpc_wan():
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(_echo_stream)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    emu = WanEmulator(("127.0.0.1", 0), ("127.0.0.1", port), latency_ms=5, bandwidth_mbps=400).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{emu.address[1]}")
    yield emu, channel
    channel.close()
    emu.stop()
    server.stop(grace=None).wait()


def test_grpc_stream_survives_a_freeze_cut_with_every_byte_intact(grpc_wan):
    wan, channel = grpc_wan
    stream = channel.stream_stream("/test.Echo/Stream")
    outbox: queue.Queue = queue.Queue()
    inbox: queue.Queue = queue.Queue()
    calls = stream(iter(outbox.get, None))
    reader = threading.Thread(target=lambda: [inbox.put(m) for m in calls], daemon=True)
    reader.start()
    sent, got = hashlib.sha256(), hashlib.sha256()
    for _ in range(24):  # 1.5 MiB in 64 KiB messages
        msg = os.urandom(65536)
        sent.update(msg)
        outbox.put(msg)
    for _ in range(24):
        got.update(inbox.get(timeout=30))
    wan.cut(mode="freeze")
    msg = os.urandom(1000)
    sent.update(msg)
    outbox.put(msg)
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.3)
    wan.restore()
    got.update(inbox.get(timeout=30))
    outbox.put(None)
    reader.join(timeout=30)
    assert got.digest() == sent.digest()


# -- control socket and command line -----------------------------------------------------------------------

def test_control_socket_drives_the_emulator(echo, tmp_path):
    ctl_path = str(tmp_path / "wan.sock")
    with WanEmulator(("127.0.0.1", 0), echo.address, control=ctl_path) as wan:
        ctl = WanControl(ctl_path)
        assert ctl.set(latency_ms=30, bandwidth_mbps=50)["directions"]["up"]["latency_ms"] == 30
        assert ctl.cut(mode="freeze")["state"] == "cut:freeze"
        assert ctl.restore()["state"] == "up"
        with pytest.raises(ValueError, match="unknown op"):
            ctl.call("unplug")
        with connect(wan) as s:
            assert min(ping_rtts(s, 2)) >= 0.055
    assert not os.path.exists(ctl_path)


def test_command_line_serves_and_controls(echo, tmp_path):
    ctl_path = str(tmp_path / "wan.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zvm.lab.wan", "serve", "--listen", "127.0.0.1:0",
         "--target", f"{echo.address[0]}:{echo.address[1]}", "--control", ctl_path, "--latency-ms", "1"],
        stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        out = subprocess.run([sys.executable, "-m", "zvm.lab.wan", "ctl", "--control", ctl_path, "cut",
                              "--mode", "reset"], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout)["state"] == "cut:reset"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(tuple(info["listen"]), timeout=5)
        subprocess.run([sys.executable, "-m", "zvm.lab.wan", "ctl", "--control", ctl_path, "restore"],
                       capture_output=True, check=True)
        with socket.create_connection(tuple(info["listen"]), timeout=10) as s:
            assert roundtrip(s, b"cli") == b"cli"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
