"""The filter's control socket (docs/CONTRACTS.md section 3): JSON lines over a unix socket, and its client.

`ControlServer` answers each request line with one reply line from a ``dispatch(request) -> reply``
callable; a request it cannot parse or that the dispatcher rejects gets ``{"ok": false, "error": ...}``
and the connection goes on. `FilterControl` is the Python client the VRA and the tests use::

    ctl = FilterControl("/run/zvr/iofilter.ctl")
    ctl.freeze("cp-17", ["vol-1"], timeout_ms=50)   # {"ok": True, "marked": True, "dirty": False}
    ctl.thaw("cp-17")                               # {"ok": True, "held_ms": 1.9, "expired": False}
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable

from vra_appliance.errors import ControlError
from zvr_common.sockserver import StreamServer

log = logging.getLogger(__name__)

MAX_LINE = 1024 * 1024


class ControlServer:
    """The filter's control socket: one JSON request per line, one JSON reply per line."""

    def __init__(self, path: str | os.PathLike, dispatch: Callable[[dict], dict]):
        self.path = os.fspath(path)
        self.dispatch = dispatch
        self._server = StreamServer(self.path, self._serve, name="iofilter-control", what="control requests",
                                    backlog=8)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn.makefile("rb") as rfile:
                while True:
                    line = rfile.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        conn.sendall(_encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"}))
                        return
                    conn.sendall(_encode(self._answer(line)))
        except OSError:
            pass

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                return {"ok": False, "error": 'a request is a JSON object with an "op", e.g. {"op": "counters"}'}
            return self.dispatch(request)
        except ValueError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control request failed: %r", line[:200])
            return {"ok": False, "error": f"internal error: {exc}"}


def _encode(reply: dict) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


class FilterControl:
    """Client of one filter's control socket. Not thread-safe: one per thread."""

    def __init__(self, path: str | os.PathLike, timeout_s: float = 5.0):
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._rfile = None

    def request(self, op: str, **fields) -> dict:
        """Send one request; returns the reply, or raises ControlError if the filter said ``ok: false``."""
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise ConnectionError(f"no IO filter control socket at {self.path}: {exc.strerror}; "
                                      "is `vra iofilter --control` running?") from exc
            self._sock, self._rfile = sock, sock.makefile("rb")
        try:
            self._sock.sendall(_encode({"op": op, **fields}))
            line = self._rfile.readline()
        except OSError:
            self.close()
            raise
        if not line:
            self.close()
            raise ConnectionError(f"IO filter at {self.path} closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "request refused"))
        return reply

    def freeze(self, checkpoint_id: str, volumes: list[str] | None = None, timeout_ms: float = 50) -> dict:
        return self.request("freeze", checkpoint_id=checkpoint_id, volumes=volumes or [], timeout_ms=timeout_ms)

    def thaw(self, checkpoint_id: str) -> dict:
        return self.request("thaw", checkpoint_id=checkpoint_id)

    def counters(self) -> dict:
        return self.request("counters")

    def dirty(self, volume: str, clear: bool = False) -> dict:
        return self.request("dirty", volume=volume, clear=clear)

    def status(self) -> dict:
        return self.request("status")

    def close(self) -> None:
        if self._rfile is not None:
            self._rfile.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._rfile = None

    def __enter__(self) -> FilterControl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
