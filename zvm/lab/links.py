"""The lab's WAN: every link between the two sites in one process, driven as one.

Each link is a :class:`zvm.lab.wan.WanEmulator` (one listening address forwarded to one target); the lab
needs several (the peer services of both ZVMs, each recovery VRA), and a real WAN fails as a whole. This
process runs them all and answers JSON lines on one unix socket; every request applies to all links, or to
the one named by ``"link"``:

    {"op": "set", "latency_ms": 20, "bandwidth_mbps": 100}    {"op": "cut", "mode": "reset"}
    {"op": "restore"}    {"op": "status"}     -> {"ok": true, "links": {name: status of that link}}

``python -m zvm.lab.links serve --config LINKS.json`` runs it (the lab starts it), ``python -m zvm.lab.links
ctl --control PATH cut`` (or ``zvm lab wan cut``) drives it. LINKS.json: ``{"control": PATH, "latency_ms": ..,
"bandwidth_mbps": .., "links": [{"name": .., "listen": [host, port], "target": [host, port]}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import sys
import threading

from zvm.lab.wan import WanEmulator


class Links:
    def __init__(self, config: dict) -> None:
        self.control = config["control"]
        self.links = {
            link["name"]: WanEmulator(tuple(link["listen"]), tuple(link["target"]),
                                      latency_ms=config.get("latency_ms", 0.0),
                                      bandwidth_mbps=config.get("bandwidth_mbps", 0.0))
            for link in config["links"]}
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def start(self) -> Links:
        started = []
        try:
            for wan in self.links.values():
                started.append(wan.start())
        except OSError:
            for wan in started:
                wan.stop()
            raise
        if os.path.exists(self.control):
            os.unlink(self.control)
        links = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    self.wfile.write(json.dumps(links.request(line)).encode() + b"\n")

        self._server = socketserver.ThreadingUnixStreamServer(self.control, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="links-control", daemon=True).start()
        return self

    def request(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
            op = req.pop("op", None)
            name = req.pop("link", None)
            if name is not None and name not in self.links:
                raise ValueError(f"no link {name!r}: the links are {', '.join(self.links)}")
            targets = {name: self.links[name]} if name else self.links
            if op == "set":
                out = {n: w.set(req.get("latency_ms"), req.get("bandwidth_mbps"), req.get("direction", "both"))
                       for n, w in targets.items()}
            elif op == "cut":
                out = {n: w.cut(req.get("mode", "freeze"), req.get("new")) for n, w in targets.items()}
            elif op == "restore":
                out = {n: w.restore() for n, w in targets.items()}
            elif op == "status":
                out = {n: w.status() for n, w in targets.items()}
            else:
                raise ValueError(f"unknown op {op!r}: use set, cut, restore or status")
            return {"ok": True, "links": out}
        except (ValueError, TypeError, AttributeError) as exc:
            return {"ok": False, "error": str(exc)}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for wan in self.links.values():
            wan.stop()
        if os.path.exists(self.control):
            os.unlink(self.control)


class LinksControl:
    """Client of a running links process (one request, one reply)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path, self.timeout = path, timeout

    def call(self, op: str, **args) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"op": op, **{k: v for k, v in args.items() if v is not None}}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf or b"{}")
        if not reply.get("ok"):
            raise ValueError(reply.get("error", "the WAN emulator refused the request"))
        return reply["links"]

    def status(self) -> dict:
        return self.call("status")

    def set(self, latency_ms: float | None = None, bandwidth_mbps: float | None = None) -> dict:
        return self.call("set", latency_ms=latency_ms, bandwidth_mbps=bandwidth_mbps)

    def cut(self, mode: str = "reset") -> dict:
        return self.call("cut", mode=mode)

    def restore(self) -> dict:
        return self.call("restore")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zvm.lab.links", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run every link of a LINKS.json until SIGTERM")
    serve.add_argument("--config", required=True)
    ctl = sub.add_parser("ctl", help="send one request to a running links process")
    ctl.add_argument("--control", required=True)
    ctl.add_argument("op", choices=["status", "cut", "restore", "set"])
    ctl.add_argument("--mode", choices=["freeze", "reset"])
    ctl.add_argument("--latency-ms", type=float)
    ctl.add_argument("--bandwidth-mbps", type=float)
    args = parser.parse_args(argv)
    if args.command == "ctl":
        extra = {"mode": args.mode, "latency_ms": args.latency_ms, "bandwidth_mbps": args.bandwidth_mbps}
        print(json.dumps(LinksControl(args.control).call(args.op, **extra), indent=1))
        return 0
    with open(args.config) as f:
        links = Links(json.load(f))
    try:
        links.start()
    except OSError as exc:
        print(f"links: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps({"control": links.control, "links": {n: list(w.address) for n, w in links.links.items()},
                      "pid": os.getpid()}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    links.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
