"""The gunicorn worker of ``zvm serve``: gunicorn's threaded worker, whose own refusals are JSON.

gunicorn answers some requests before the application sees them (a request line over 4094 bytes is 414,
too many or too large header fields 431, malformed HTTP 400, plain HTTP on the HTTPS port 403), with an
HTML page. This worker lets gunicorn decide the status as it always does, and writes the API's error shape
instead: ``{"Code", "Message", "Field"}`` with a message that says what to fix.

It also closes, and says ``Connection: close`` on, a connection whose request the application marked
``environ["zvm.close_connection"]`` (a body refused unread: gunicorn would drain 64 KiB of it and then drop
the connection without a word, failing the client's next request on it).
"""

from __future__ import annotations

import json

from gunicorn.workers.gthread import ThreadWorker

# status -> (Code, Message)
ANSWERS = {
    400: ("BadRequest", "the request is not valid HTTP/1.1: check the request line, headers and chunking"),
    403: ("BadRequest", "the request could not be read on this connection (plain HTTP to the HTTPS port?): "
                        "use https://"),
    414: ("UriTooLong", "the request line is longer than 4094 bytes: send shorter paths and query strings"),
    417: ("BadRequest", "the Expect header is not supported: send the body without it"),
    431: ("RequestHeaderTooLarge", "too many or too large header fields: send fewer or shorter headers"),
    500: ("InternalError", "the ZVM failed unexpectedly: the error is in its log; report it"),
    501: ("NotImplemented", "this transfer coding is not supported: send the body with Content-Length or "
                            "chunked"),
}


class _Capture:
    """Stands for the client socket while gunicorn writes its HTML error, to learn the status it chose."""

    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0

    def setblocking(self, flag):
        pass

    def send(self, data):
        self.data += bytes(data)
        return len(data)

    def sendall(self, data):
        self.data += bytes(data)


def json_error(status: int, reason: str) -> bytes:
    code, message = ANSWERS.get(status, ("BadRequest", reason or "the request was refused"))
    body = (json.dumps({"Code": code, "Message": message, "Field": None}) + "\n").encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    return head + body


CLOSE_CONNECTION = "zvm.close_connection"


def closing_marked_connections(app):
    def wsgi(environ, start_response):
        def start(status, headers, exc_info=None):
            response = getattr(start_response, "__self__", None)  # gunicorn's Response
            if environ.get(CLOSE_CONNECTION) and hasattr(response, "force_close"):
                response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wsgi


class ZvmWorker(ThreadWorker):
    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = closing_marked_connections(self.wsgi)

    def handle_error(self, req, client, addr, exc):
        capture = _Capture()
        super().handle_error(req, capture, addr, exc)  # logs, and picks the status
        status_line = capture.data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            status, parts = 500, ["", "500", "Internal Server Error"]
        reason = parts[2] if len(parts) > 2 else ""
        try:
            client.sendall(json_error(status, reason))
        except OSError:
            self.log.debug("Failed to send error message.")
