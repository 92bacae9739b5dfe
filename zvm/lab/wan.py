"""A WAN emulator for the lab and the tests: a TCP proxy with latency, a bandwidth cap, cuts and restores.

The kernel here has no netem, so link faults between the sites go through this proxy. It forwards every
connection made to ``listen`` to ``target`` and, per direction:

- adds a one-way ``latency_ms`` to every byte (each chunk read is stamped and written ``latency_ms`` later,
  in order, so the byte stream is never reordered);
- caps the rate at ``bandwidth_mbps`` (megabits per second) with a token bucket shared by all the
  connections of that direction, as on one link; 0 means unlimited;
- on ``cut(mode="freeze")`` stops moving bytes (they wait in the proxy and in the kernel's socket buffers,
  so senders block as on a dead link), and holds new connections until ``restore()``; on
  ``cut(mode="reset")`` resets every connection (TCP RST) and refuses new ones (the listener is closed, so
  clients get ECONNREFUSED). ``new="hold"|"refuse"`` overrides what happens to new connections.

It only moves bytes, so any protocol runs through it, gRPC's HTTP/2 included. Controlled from Python::

    wan = WanEmulator(("127.0.0.1", 0), ("127.0.0.1", 4005)).start()
    wan.set(latency_ms=40, bandwidth_mbps=100)
    wan.cut(mode="freeze"); ...; wan.restore()
    wan.stop()

or, for the lab, over JSON lines on a unix socket (``control=PATH``; :class:`WanControl` is the client)::

    {"op": "set", "latency_ms": 40, "bandwidth_mbps": 100}   -> {"ok": true, ...status}
    {"op": "cut", "mode": "freeze"|"reset", "new": "hold"|"refuse"}
    {"op": "restore"}   {"op": "status"}

``python -m zvm.lab.wan serve --listen HOST:PORT --target HOST:PORT --control PATH`` runs one;
``python -m zvm.lab.wan ctl --control PATH cut --mode reset`` drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass, field

READ_CHUNK = 64 * 1024
MIN_BUFFER = 1024 * 1024
CUT_MODES = ("freeze", "reset")
NEW_MODES = ("hold", "refuse")
UP, DOWN = "up", "down"  # up: client -> target; down: target -> client


@dataclass
class Direction:
    latency_ms: float = 0.0
    bandwidth_mbps: float = 0.0  # 0: unlimited
    bytes: int = 0

    @property
    def rate(self) -> float:
        """Bytes per second; 0 means unlimited."""
        return self.bandwidth_mbps * 1e6 / 8


class _Pacer:
    """Token bucket of one direction, as a virtual clock: the link is busy sending until ``busy_until``.

    Each piece reserves its transmission time; the writer sleeps until the piece has "left" (less a small
    burst allowance), so the long-run rate is ``rate`` whatever the number of connections.
    """

    BURST_S = 0.002

    def __init__(self, direction: Direction) -> None:
        self.d = direction
        self.busy_until = 0.0

    def piece(self) -> int:
        rate = self.d.rate
        return READ_CHUNK if rate <= 0 else int(min(READ_CHUNK, max(1024, rate / 200)))

    async def take(self, n: int) -> None:
        rate = self.d.rate
        if rate <= 0:
            return
        now = asyncio.get_running_loop().time()
        self.busy_until = max(now, self.busy_until) + n / rate
        delay = self.busy_until - now - self.BURST_S
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class _Conn:
    cid: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: list = field(default_factory=list)


class _Pipe:
    """One direction of one connection: read, stamp, delay, pace, write; bounded in memory."""

    def __init__(self, emu: WanEmulator, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.emu, self.name, self.reader, self.writer = emu, name, reader, writer
        self.d = emu.directions[name]
        self.pacer = emu.pacers[name]
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.eof = False
        self.data = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()

    def _limit(self) -> int:
        # Enough to keep a fast link full across the latency (twice the bandwidth-delay product).
        rate = self.d.rate or 125e6
        return max(MIN_BUFFER, int(2 * rate * self.d.latency_ms / 1000))

    async def pump_in(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.emu._up.wait()
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    break
                self.queue.append((loop.time() + self.d.latency_ms / 1000, chunk))
                self.queued += len(chunk)
                self.data.set()
                while self.queued >= self._limit():
                    self.space.clear()
                    await self.space.wait()
        finally:
            self.eof = True
            self.data.set()

    async def pump_out(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self.eof:
                    break
                self.data.clear()
                await self.data.wait()
                continue
            due, chunk = self.queue[0]
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            view = memoryview(chunk)
            while view:
                await self.emu._up.wait()
                n = min(len(view), self.pacer.piece())
                await self.pacer.take(n)
                await self.emu._up.wait()
                self.writer.write(view[:n])
                await self.writer.drain()
                self.d.bytes += n
                view = view[n:]
            self.queue.popleft()
            self.queued -= len(chunk)
            self.space.set()
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class WanEmulator:
    """A TCP proxy from ``listen`` to ``target`` (``(host, port)``; port 0 picks one) with link faults."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], *, control: str | None = None,
                 latency_ms: float = 0.0, bandwidth_mbps: float = 0.0) -> None:
        self.listen = (listen[0], int(listen[1]))
        self.target = (target[0], int(target[1]))
        self.control = control
        self.directions = {UP: Direction(latency_ms, bandwidth_mbps), DOWN: Direction(latency_ms, bandwidth_mbps)}
        self.pacers = {k: _Pacer(d) for k, d in self.directions.items()}
        self.state = "up"  # "up", or "cut:<mode>"
        self.new_mode = "hold"
        self.counters = {"accepted": 0, "active": 0, "reset": 0, "held": 0, "refused_while_cut": 0,
                         "target_unreachable": 0}
        self._conns: dict[int, _Conn] = {}
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._control_server = None
        self._up: asyncio.Event

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect (the real port when ``listen`` asked for port 0)."""
        return self.listen

    def start(self) -> WanEmulator:
        """Listen (and open the control socket); returns once clients can connect."""
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to start()'s caller
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=5))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"wan-{self.listen[1]}", daemon=True)
        self._thread.start()
        started.wait()
        if errors:
            self._thread.join()
            self._loop = self._thread = None
            raise errors[0]
        return self

    async def _start(self) -> None:
        self._up = asyncio.Event()
        self._up.set()
        await self._listen()
        if self.control:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.control)
            self._control_server = await asyncio.start_unix_server(self._serve_control, path=self.control)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1], reuse_address=True)
        self.listen = self._server.sockets[0].getsockname()[:2]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    async def _stop(self) -> None:
        for srv in (self._server, self._control_server):
            if srv is not None:
                srv.close()
        self._server = self._control_server = None
        if self.control:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.control)
        conns = list(self._conns.values())
        tasks = [t for c in conns for t in c.tasks]
        for conn in conns:
            self._close_conn(conn, reset=True)
        self._up.set()  # wakes held connections, which find themselves closed
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def __enter__(self) -> WanEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- control (thread-safe) ---------------------------------------------------------------------------
    def _call(self, coro):
        if self._loop is None:
            coro.close()
            raise RuntimeError("the WAN emulator is not running: start() it first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def set(self, latency_ms: float | None = None, bandwidth_mbps: float | None = None,
            direction: str = "both") -> dict:
        """Change the latency (one-way, ms) and bandwidth cap (Mbit/s, 0 = unlimited) of one or both directions."""
        return self._call(self._set(latency_ms, bandwidth_mbps, direction))

    def cut(self, mode: str = "freeze", new: str | None = None) -> dict:
        """Cut the link: ``freeze`` holds every byte, ``reset`` resets every connection (see the module doc)."""
        return self._call(self._cut(mode, new))

    def restore(self) -> dict:
        return self._call(self._restore())

    def status(self) -> dict:
        return self._call(self._status())

    async def _set(self, latency_ms, bandwidth_mbps, direction: str) -> dict:
        if direction not in ("both", UP, DOWN):
            raise ValueError(f"direction must be 'both', 'up' or 'down', not {direction!r}")
        for value, what in ((latency_ms, "latency_ms"), (bandwidth_mbps, "bandwidth_mbps")):
            if value is not None and float(value) < 0:
                raise ValueError(f"{what} must be 0 or more, not {value}")
        for name in ((UP, DOWN) if direction == "both" else (direction,)):
            d = self.directions[name]
            if latency_ms is not None:
                d.latency_ms = float(latency_ms)
            if bandwidth_mbps is not None:
                d.bandwidth_mbps = float(bandwidth_mbps)
        return await self._status()

    async def _cut(self, mode: str, new: str | None) -> dict:
        if mode not in CUT_MODES:
            raise ValueError(f"cut mode must be one of {CUT_MODES}, not {mode!r}")
        new = new or ("hold" if mode == "freeze" else "refuse")
        if new not in NEW_MODES:
            raise ValueError(f"new-connection mode must be one of {NEW_MODES}, not {new!r}")
        self.state, self.new_mode = f"cut:{mode}", new
        self._up.clear()
        if mode == "reset":
            for conn in list(self._conns.values()):
                self._close_conn(conn, reset=True)
                self.counters["reset"] += 1
        if new == "refuse" and self._server is not None:
            self._server.close()  # clients now get ECONNREFUSED; restore() listens again
            self._server = None
        return await self._status()

    async def _restore(self) -> dict:
        self.state = "up"
        if self._server is None:
            await self._listen()
        self._up.set()
        return await self._status()

    async def _status(self) -> dict:
        return {"listen": list(self.listen), "target": list(self.target), "state": self.state,
                "new_connections": self.new_mode if self.state != "up" else "accept",
                "directions": {k: asdict(d) for k, d in self.directions.items()},
                "counters": dict(self.counters, active=len(self._conns))}

    # -- connections -------------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state != "up" and self.new_mode == "refuse":
            self.counters["refused_while_cut"] += 1
            _rst(writer)
            return
        self._next += 1
        conn = _Conn(self._next, writer)
        self._conns[conn.cid] = conn
        self.counters["accepted"] += 1
        try:
            if not self._up.is_set():
                self.counters["held"] += 1
                await self._up.wait()
            if conn.cid not in self._conns:  # reset while held
                return
            try:
                t_reader, t_writer = await asyncio.open_connection(*self.target)
            except OSError:
                self.counters["target_unreachable"] += 1
                self._close_conn(conn, reset=True)
                return
            conn.server = t_writer
            if conn.cid not in self._conns:
                _rst(t_writer)
                return
            up = _Pipe(self, UP, reader, t_writer)
            down = _Pipe(self, DOWN, t_reader, writer)
            loop = asyncio.get_running_loop()
            conn.tasks = [loop.create_task(p) for p in (up.pump_in(), up.pump_out(), down.pump_in(), down.pump_out())]
            done, _ = await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done if not t.cancelled()):
                self._close_conn(conn, reset=True)
            else:
                await asyncio.wait(conn.tasks)
                self._close_conn(conn, reset=False)
        finally:
            self._conns.pop(conn.cid, None)

    def _close_conn(self, conn: _Conn, reset: bool) -> None:
        self._conns.pop(conn.cid, None)
        for t in conn.tasks:
            t.cancel()
        for w in (conn.client, conn.server):
            if w is None:
                continue
            if reset:
                _rst(w)
            else:
                w.close()

    # -- the control socket --------------------------------------------------------------------------------
    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    op = req.pop("op", None)
                    if op == "set":
                        reply = await self._set(req.get("latency_ms"), req.get("bandwidth_mbps"),
                                                req.get("direction", "both"))
                    elif op == "cut":
                        reply = await self._cut(req.get("mode", "freeze"), req.get("new"))
                    elif op == "restore":
                        reply = await self._restore()
                    elif op == "status":
                        reply = await self._status()
                    else:
                        raise ValueError(f"unknown op {op!r}: use set, cut, restore or status")
                    reply = {"ok": True, **reply}
                except (ValueError, TypeError, AttributeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


class WanControl:
    """Client of a running emulator's control socket (one request, one reply line)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, op: str, **args) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise ValueError(reply.get("error", "the WAN emulator refused the request"))
        return reply

    def set(self, **args) -> dict:
        return self.call("set", **args)

    def cut(self, mode: str = "freeze", new: str | None = None) -> dict:
        return self.call("cut", mode=mode, **({"new": new} if new else {}))

    def restore(self) -> dict:
        return self.call("restore")

    def status(self) -> dict:
        return self.call("status")


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zvm.lab.wan",
        description="WAN emulator for the lab: a TCP proxy with latency, bandwidth cap, cuts and restores.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run a proxy until SIGTERM or Ctrl-C")
    serve.add_argument("--listen", type=_hostport, required=True, help="HOST:PORT clients connect to")
    serve.add_argument("--target", type=_hostport, required=True, help="HOST:PORT the proxy connects to")
    serve.add_argument("--control", help="unix socket path for JSON-lines control (set, cut, restore, status)")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="one-way latency per direction")
    serve.add_argument("--bandwidth-mbps", type=float, default=0.0, help="cap per direction, Mbit/s (0: none)")
    ctl = sub.add_parser("ctl", help="drive a running proxy through its control socket")
    ctl.add_argument("--control", required=True)
    ops = ctl.add_subparsers(dest="op", metavar="OP", required=True)
    s = ops.add_parser("set", help="change latency and bandwidth")
    s.add_argument("--latency-ms", type=float)
    s.add_argument("--bandwidth-mbps", type=float)
    s.add_argument("--direction", choices=("both", UP, DOWN), default="both")
    c = ops.add_parser("cut", help="cut the link")
    c.add_argument("--mode", choices=CUT_MODES, default="freeze")
    c.add_argument("--new", choices=NEW_MODES)
    ops.add_parser("restore", help="restore the link")
    ops.add_parser("status", help="settings and counters")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        wan = WanEmulator(args.listen, args.target, control=args.control, latency_ms=args.latency_ms,
                          bandwidth_mbps=args.bandwidth_mbps)
        try:
            wan.start()
        except OSError as exc:
            print(f"wan: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror}", file=sys.stderr)
            return 1
        print(json.dumps({"listen": list(wan.address), "target": list(wan.target), "control": args.control,
                          "pid": os.getpid()}), flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        wan.stop()
        return 0
    if args.command == "ctl":
        ctl = WanControl(args.control)
        try:
            if args.op == "set":
                reply = ctl.set(latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps,
                                direction=args.direction)
            elif args.op == "cut":
                reply = ctl.cut(args.mode, args.new)
            else:
                reply = ctl.call(args.op)
        except (OSError, ValueError) as exc:
            print(f"wan: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(reply))
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
