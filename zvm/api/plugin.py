"""The vSphere Client plugin and standalone web UI on the API's port: pages, manifest, assets, browser sessions.

Paths (outside /v1, so the REST API and its OpenAPI document are unchanged):

- ``/plugin/plugin.json``: the remote plugin's manifest (vsphere_plugin/plugin.json), the URL registered with
  vCenter (zvm/plugin.py); ``/plugin/`` the standalone UI; ``/plugin/views/<view>`` one view as the vSphere
  Client loads it in an iframe (it loads the client's ``/api/ui/htmlClientSdk.js``); ``/plugin/assets/...``
  what ``vsphere_plugin/build.mjs`` built (vsphere_plugin/dist, made by ./run; $ZVR_PLUGIN_DIST names another
  directory); ``/`` redirects to the UI.
- Browser sessions: ``POST /v1/session/add`` with the header ``X-ZVR-Session-Cookie: 1`` (the login page)
  answers with the token in an HttpOnly, SameSite=Strict cookie instead of the ``x-zerto-session`` header,
  plus a ``zvr_csrf`` cookie the page reads. A request with the cookie and no header is treated as if it
  carried the header; one that changes state must also send ``X-CSRF-Token`` equal to the session's CSRF
  token (derived from the session token, so no other site can set or guess it), else 403. Scripts that
  send ``x-zerto-session`` are not affected.
- ``POST /plugin/auth/vsphere`` ``{"CloneTicket": ...}``: inside the vSphere Client, the view hands over a
  ticket of the user's vCenter session; the ZVM clones that session on its own vCenter
  (``SessionManager.CloneSession``), so vCenter itself vouches for the user, and opens a ZVM session for
  ``vsphere:<vCenter user>`` with the same cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import os
import time
from pathlib import Path

import flask
from flask import request

import vsphere_plugin
from zvm import models as m
from zvm.api.context import SESSION_HEADER, service
from zvm.api.session import open_session
from zvm.db import transaction
from zvm.errors import AuthenticationError, ValidationError, ZvmError

ROOT = Path(vsphere_plugin.__file__).resolve().parent
# Where ./run's build put the assets; another build (an installer's, a developer's) can be named instead.
DIST = Path(os.environ.get("ZVR_PLUGIN_DIST") or ROOT / "dist")
MANIFEST = ROOT / "plugin.json"
SESSION_COOKIE = "zvr_session"
CSRF_COOKIE = "zvr_csrf"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_LOGIN_HEADER = "X-ZVR-Session-Cookie"
VIEWS = {"dashboard", "vpgs", "vpg", "sites", "vm", "host", "cluster", "modal"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
VSPHERE_USER_PREFIX = "vsphere:"

bp = flask.Blueprint("plugin", __name__)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: bound to it, unknown to anyone who cannot read the page's cookies."""
    return hashlib.sha256(b"zvr-csrf\0" + session_token.encode()).hexdigest()


def _json_error(code: str, message: str, status: int, field: str | None = None) -> flask.Response:
    return flask.Response(json.dumps({"Code": code, "Message": message, "Field": field}) + "\n", status=status,
                          mimetype="application/json")


@bp.before_app_request
def _session_from_cookie():
    token = request.cookies.get(SESSION_COOKIE)
    if not token or request.headers.get(SESSION_HEADER) or not request.path.startswith("/v1/"):
        return None
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), csrf_token(token)):
        return _json_error("CsrfTokenInvalid", f"a call that changes state with the session cookie needs the "
                           f"{CSRF_HEADER} header (the value of the {CSRF_COOKIE} cookie): reload the page", 403)
    # The REST API reads the session from its header; the cookie stands for it.
    request.environ["HTTP_X_ZERTO_SESSION"] = token
    return None


def _set_session_cookies(resp: flask.Response, token: str) -> None:
    secure = request.is_secure
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/")
    resp.set_cookie(CSRF_COOKIE, csrf_token(token), httponly=False, samesite="Strict", secure=secure, path="/")


@bp.after_app_request
def _cookies_for_the_browser(resp: flask.Response) -> flask.Response:
    if request.path == "/v1/session/add" and request.headers.get(COOKIE_LOGIN_HEADER) == "1" and resp.status_code == 200:
        token = resp.headers.pop(SESSION_HEADER, None)
        if token:
            _set_session_cookies(resp, token)
    elif request.path == "/v1/session" and request.method == "DELETE" and request.cookies.get(SESSION_COOKIE):
        resp.delete_cookie(SESSION_COOKIE, path="/", samesite="Strict")
        resp.delete_cookie(CSRF_COOKIE, path="/", samesite="Strict")
    return resp


# --- pages ------------------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ZVR{title}</title>
<link rel="icon" href="/plugin/assets/sprites.svg">
<link rel="stylesheet" href="/plugin/assets/app.css?v={build}">
{sdk}<script defer src="/plugin/assets/app.js?v={build}"></script>
</head>
<body data-view="{view}" cds-theme="light">
<div id="app" class="zvr-app"><p style="padding:1rem">Loading…</p></div>
<noscript>The ZVR user interface needs JavaScript.</noscript>
</body>
</html>
"""

NOT_BUILT = ("<!doctype html><title>ZVR</title><h1>The user interface is not built</h1><p>Its assets are made "
             "from vsphere_plugin/ by <code>./run</code> (npm ci, then node vsphere_plugin/build.mjs): run "
             "<code>./run help</code> once, then reload.</p>")


def _page(view: str) -> flask.Response:
    built = DIST / "BUILT"
    if not built.exists():
        return flask.Response(NOT_BUILT, status=503, mimetype="text/html")
    build = hashlib.sha256(built.read_bytes()).hexdigest()[:12]
    # Inside the vSphere Client the view runs in an iframe the client serves: its JS API is at this path.
    sdk = '<script src="/api/ui/htmlClientSdk.js"></script>\n' if view != "shell" else ""
    title = "" if view == "shell" else f" — {view}"
    resp = flask.Response(PAGE.format(title=title, build=build, sdk=sdk, view=view), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self' "
                                               "'unsafe-inline'; font-src 'self' data:; object-src 'none'")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/")
def _root():
    return flask.redirect("/plugin/")


@bp.get("/plugin/")
def standalone():
    return _page("shell")


@bp.get("/plugin/views/<view>")
def view(view: str):
    if view not in VIEWS:
        return _json_error("NotFound", f"no view {view!r}: the views are {', '.join(sorted(VIEWS))}", 404)
    return _page(view)


@bp.get("/plugin/plugin.json")
def manifest():
    resp = flask.send_file(MANIFEST, mimetype="application/json", max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.get("/plugin/assets/<path:name>")
def assets(name: str):
    # The build keeps a gzip copy of the text assets (the Clarity CSS is 1 MB, 0.1 MB compressed).
    gz = DIST / f"{name}.gz"
    if "gzip" in request.headers.get("Accept-Encoding", "") and "/" not in name and gz.is_file():
        resp = flask.send_file(gz, mimetype=mimetypes.guess_type(name)[0] or "application/octet-stream", max_age=3600)
        resp.headers["Content-Encoding"] = "gzip"
        resp.headers["Vary"] = "Accept-Encoding"
    else:
        resp = flask.send_from_directory(DIST, name, max_age=3600)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# --- the vSphere Client's user --------------------------------------------------------------------------

def vsphere_user(ticket: str) -> str:
    """The vCenter user whose session ``ticket`` clones, as this site's vCenter says."""
    from zvm.vcenter import VCenter, VCenterConfig

    site = service().local_site()
    if not site.vcenter_url:
        raise AuthenticationError("this ZVM has no vCenter configured: it cannot check a vSphere Client user")
    verify: bool | str = site.vcenter_verify
    if verify.lower() in ("true", "false"):
        verify = verify.lower() == "true"
    config = VCenterConfig(url=site.vcenter_url, username="", password="", verify=verify,
                           thumbprint=site.vcenter_thumbprint or None)
    with VCenter(config, clone_ticket=ticket) as vc:
        return vc.user


def _vsphere_event(user: str, result: str, detail: str, started: float) -> None:
    with transaction():
        m.Event.create(kind="VsphereLogin", category="Session", user=user, description="vSphere Client login",
                       entity_id="", result=result, detail=detail, started_at=started, completed_at=time.time())


@bp.post("/plugin/auth/vsphere")
def vsphere_login():
    started = time.time()
    body = request.get_json(silent=True) or {}
    ticket = body.get("CloneTicket")
    username = ""
    try:
        if not isinstance(ticket, str) or not ticket or len(ticket) > 4096:
            raise ValidationError("CloneTicket: give the ticket of the vSphere Client's session "
                                  "(htmlClientSdk.app.getSessionInfo)", field="CloneTicket")
        username = f"{VSPHERE_USER_PREFIX}{vsphere_user(ticket)}"[:128]
        with transaction():
            # A vSphere user has no ZVM password: the hash is of a random secret no one knows. The role is
            # the users' default until vCenter privileges are mapped to roles (docs/PLUGIN.md).
            user, _ = m.User.get_or_create(username=username,
                                           defaults={"password_hash": m.unusable_password_hash()})
            if user.disabled:
                raise AuthenticationError(f"the ZVM user {username} is disabled: ask a ZVM administrator")
            token = open_session(service(), user, request.remote_addr or "").token
    except ZvmError as exc:
        _vsphere_event(username, "Refused", f"{exc.code}: {exc}", started)
        return _json_error(exc.code, str(exc), exc.http_status, exc.field)
    _vsphere_event(username, "Succeeded", "", started)
    resp = flask.jsonify({"User": username})
    _set_session_cookies(resp, token)
    return resp
