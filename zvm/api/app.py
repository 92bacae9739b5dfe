"""``create_app(config)``: the ZVM's Flask application, REST API under /v1.

Errors are translated here, at the boundary: a ``ZvmError`` becomes ``{"Code", "Message", "Field"}`` with
the error's HTTP status; Flask's own (unknown path, wrong method) get the same shape; anything else is a 500
``InternalError`` whose details go to the log, never to the caller.

Bodies are limited to ``MAX_BODY``, whether sent with a Content-Length or chunked (413 either way; a
chunked body is never cut short silently). No answer is a redirect built from the request's Host header:
paths are matched as given (``/v1//vpgs`` is a 404, not a redirect to ``http://HOST/v1/vpgs``), except
that their fixed segments are case-insensitive (zvm/api/paths.py), as Zerto's are.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping

import flask
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from zvm import db as zdb
from zvm.api import blueprints, metrics, plugin
from zvm.api.cache import ResponseCache
from zvm.api.paths import CaseInsensitivePaths
from zvm.api.throttle import LoginThrottle, ThrottlePolicy
from zvm.config import ZvmConfig, load_config
from zvm.errors import TooManyAttemptsError, ZvmError
from zvm.service import Zvm

log = logging.getLogger("zvm.api")
PREFIX = "/v1"
MAX_BODY = 4 << 20


def _error(code: str, message: str, status: int, field: str | None = None, headers=None) -> flask.Response:
    resp = flask.current_app.response_class(
        flask.json.dumps({"Code": code, "Message": message, "Field": field}) + "\n", status=status,
        mimetype="application/json")
    if headers:
        resp.headers.update(headers)
    return resp


_HTTP_CODES = {404: ("NotFound", "no such path: see GET /v1/openapi.json for the paths this API serves"),
               405: ("MethodNotAllowed", "this path does not take this method: see the Allow header"),
               413: ("PayloadTooLarge", f"the body is larger than {MAX_BODY >> 20} MiB: send less at once"),
               415: ("UnsupportedMediaType", "send the body as JSON (Content-Type: application/json)")}


def _limit_chunked_body() -> flask.Response | None:
    """Read a body sent without Content-Length (chunked) up to the limit: 413 past it, else hand it on as a
    body of known length (Werkzeug would cut it at the limit without a word)."""
    environ = flask.request.environ
    if flask.request.content_length is not None or flask.request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    stream = environ.get("wsgi.input")
    if stream is None:
        return None
    data = bytearray()
    while len(data) <= MAX_BODY:
        chunk = stream.read(min(65536, MAX_BODY + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_BODY:
        environ["zvm.close_connection"] = True  # zvm/serve_worker.py: the rest of the body is not read
        code, message = _HTTP_CODES[413]
        return _error(code, message, 413)
    environ["wsgi.input"] = io.BytesIO(bytes(data))
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


def create_app(config: ZvmConfig | Mapping, *, vcenter_factory: Callable | None = None,
               start: bool = False, zvm: Zvm | None = None,
               clock: Callable[[], float] = time.time) -> flask.Flask:
    """The API app of one ZVM. ``config`` is a ZvmConfig or a mapping of its keys (checked the same way).

    ``start`` runs the background loops (the service does; tests drive them by hand). ``clock`` is what
    login throttling reads (tests give a fake one)."""
    if isinstance(config, Mapping):
        config = load_config(env={}, **config)
    zvm = zvm or Zvm(config, vcenter_factory=vcenter_factory).open()
    app = flask.Flask("zvm")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["zvm"] = zvm
    app.extensions["login_throttle"] = LoginThrottle(
        ThrottlePolicy(free_failures=config.login_free_failures, max_delay=float(config.login_max_delay)), clock)
    # No redirect to a "canonical" URL: Werkzeug would build it from the Host header the client sent.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.redirect_defaults = False
    if zvm.response_cache is None:
        zvm.response_cache = ResponseCache()
    for bp in blueprints():
        app.register_blueprint(bp, url_prefix=PREFIX)
    app.register_blueprint(plugin.bp)  # the vSphere Client plugin and web UI, outside /v1
    metrics.install(app)  # GET /metrics (Prometheus), outside /v1, and the API's latency histogram
    app.wsgi_app = CaseInsensitivePaths(app.wsgi_app, [r.rule for r in app.url_map.iter_rules()], PREFIX)

    @app.before_request
    def _open_db():
        too_large = _limit_chunked_body()
        if too_large is not None:
            return too_large
        zdb.connect(zvm.db)

    # SQLite connections stay open in their thread (opening one runs its pragmas each time); a
    # PostgreSQL connection goes back to the pool after each request.
    keep_open = not zdb.is_postgres(zvm.db)

    @app.teardown_request
    def _close_db(exc):
        if not keep_open and not zvm.db.is_closed():
            zvm.db.close()
        if flask.g.get("queued_tasks"):
            zvm.wake_tasks()

    @app.errorhandler(ZvmError)
    def _zvm_error(exc: ZvmError):
        if exc.http_status >= 500:
            log.warning("%s: %s", exc.code, exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttemptsError) else None
        return _error(exc.code, str(exc), exc.http_status, exc.field, headers=headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code, message = _HTTP_CODES.get(exc.code, (type(exc).__name__, exc.description or exc.name))
        headers = {"Allow": ", ".join(exc.valid_methods or [])} if isinstance(exc, MethodNotAllowed) else None
        if exc.code == 413:
            flask.request.environ["zvm.close_connection"] = True
        return _error(code, message, exc.code or 500, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", flask.request.method, flask.request.path)
        return _error("InternalError", "the ZVM failed unexpectedly: the error is in its log; report it", 500)

    if start:
        zvm.start()
    return app
