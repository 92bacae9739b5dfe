"""``GET /metrics``: the ZVM's Prometheus metrics (zvm/metrics.py), and the API latency they include.

Two ways to scrape, as the operator configures (docs/OPERATIONS.md, "Metrics"):

- on the API's port, always: ``/metrics`` needs the viewer role, proved by a session
  (``x-zerto-session``) or by HTTP Basic authentication with a user name and password (what Prometheus'
  ``basic_auth`` sends; each such scrape runs the password hash once, and a wrong password counts for
  login throttling and is audited as a refused login, as for ``POST /v1/session/add``);
- with ``metrics_listen = "HOST:PORT"``, also on a listener of its own without authentication, for a
  monitoring network the operator chooses. One process of the service runs it (the one that runs the
  background loops), so its address is bound once.

Every API request is timed here (``before_app_request`` / ``after_app_request``), labelled with its route
template (``/v1/vpgs/<vpgIdentifier>``, never the identifiers themselves: the label set stays bounded).
"""

from __future__ import annotations

import logging
import time

import flask
from flask import g, request
from prometheus_client import exposition

from zvm import metrics
from zvm import models as m
from zvm.api.context import SESSION_HEADER, require_session, service
from zvm.api.session import login_throttle, refuse
from zvm.errors import AuthenticationError, AuthorizationError

log = logging.getLogger("zvm.api.metrics")
bp = flask.Blueprint("metrics", __name__)
ROLE = "viewer"


@bp.before_app_request
def _start_timer():
    g.metrics_started = time.perf_counter()


@bp.after_app_request
def _observe(response: flask.Response) -> flask.Response:
    started = g.get("metrics_started")
    if started is not None:
        rule = request.url_rule.rule if request.url_rule is not None else "(no route)"
        metrics.observe_request(request.method, rule, response.status_code, time.perf_counter() - started)
    return response


def _authorize() -> None:
    """A session or HTTP Basic credentials of an enabled user with the viewer role; else 401 (or 403)."""
    if request.headers.get(SESSION_HEADER):
        require_session()
        role = g.get("role", "")
    else:
        auth = request.authorization
        if auth is None or auth.type != "basic" or not auth.username:
            raise AuthenticationError(f"/metrics needs a session ({SESSION_HEADER}) or HTTP Basic authentication "
                                      f"of a user with the {ROLE} role (Prometheus: basic_auth); or configure "
                                      "metrics_listen for a listener of its own")
        throttle, address = login_throttle(), request.remote_addr or ""
        throttle.check(auth.username[:128], address)
        user = m.User.get_or_none(m.User.username == auth.username[:128])
        matches = m.verify_password(auth.password or "", user.password_hash if user else m.unusable_password_hash())
        if user is None or user.disabled or not matches:
            refuse(throttle, auth.username[:128], address, "metrics scrape: wrong credentials")
        role = user.role
    if not m.role_allows(role, ROLE):
        raise AuthorizationError(f"/metrics needs the {ROLE} role: ask an administrator")


@bp.route("/metrics", methods=["GET"])
def scrape():
    _authorize()
    zvm = service()
    encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
    body = encoder(metrics.registry(lambda: zvm.db))
    return flask.Response(body, status=200, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


class MetricsListener:
    """``metrics_listen``: /metrics without authentication on an address of its own (a loop of the service:
    ``start()`` binds, ``stop()`` closes)."""

    def __init__(self, zvm, address: str):
        self.zvm = zvm
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.server = None
        self.thread = None

    def start(self) -> None:
        reg = metrics.registry(lambda: self.zvm.db)
        try:
            self.server, self.thread = exposition.start_http_server(self.port, addr=self.host.strip("[]"),
                                                                    registry=reg)
        except OSError as exc:  # the ZVM's work goes on without it
            log.error("metrics_listen = %s:%d: cannot listen there (%s); /metrics stays on the API port only",
                      self.host, self.port, exc)
            return
        self.port = self.server.server_address[1]
        log.info("metrics served without authentication on %s:%d/metrics (metrics_listen)", self.host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def install(app: flask.Flask) -> None:
    """Serve /metrics and time every request of ``app``; start the listener of ``metrics_listen`` with the
    service's loops."""
    app.register_blueprint(bp)
    zvm = app.extensions["zvm"]
    if zvm.config.metrics_listen:
        zvm.add_loop(MetricsListener(zvm, zvm.config.metrics_listen))
