"""Route specs declared next to their handlers: the one source of the routes, their checks and the OpenAPI.

A resource module makes an ``ApiBlueprint`` and decorates each handler with ``@bp.operation(...)``, giving
the method, the path (OpenAPI style, ``/vpgs/{vpgIdentifier}``), the query parameters, the body schema and
the response schema. The decorator registers the Flask route and wraps the handler so that, in order:

1. the session is checked (every operation but login needs one; a missing or expired one is 401), then
   the user's role against the one the operation declares (``role``: viewer, operator or admin; by default
   viewer for reads and admin for changes). A refusal is 403 and an audit event; the OpenAPI document shows
   each operation's role (``x-zvr-role`` and its description),
2. the query and body are checked against their schemas (400 naming the field),
3. the handler runs; for a method that changes state, inside one database transaction, so a refused or
   failed request leaves nothing half-written,
4. the result is sent as JSON with the declared status.

``openapi_document(blueprints)`` builds the OpenAPI 3.0 document from the same declarations, so the document
cannot drift from what is served.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import flask
from flask import Blueprint, Response, request

from zvm.api import schemas
from zvm.api.cache import COMPRESS_FROM, choose_encoding, current_revision
from zvm.api.validate import check, coerce_query
from zvm.errors import SessionError, UnsupportedMediaTypeError, ValidationError
from zvm.models import ROLES

ENROLLMENT_TOKEN_HEADER = "x-zvr-enrollment-token"

# What each error status means to a caller; every operation documents the ones it can answer with.
ERROR_STATUSES = {
    400: "The request is invalid: the message names the field and what to fix. Nothing was changed.",
    401: "No session, an expired one, or refused credentials: log in with POST /v1/session/add.",
    403: "The user's role does not allow this operation: ask an administrator (see the operation's role).",
    404: "The object named in the path does not exist.",
    405: "The path does not take this method.",
    409: "The object's state does not allow this now; the message says what to wait for. Nothing changed.",
    415: "The body must be JSON (Content-Type: application/json).",
    429: "Too many failed logins for this user or from this address: wait the Retry-After seconds.",
    503: "A dependency (database, vCenter, peer site) did not answer: retry later.",
}


@dataclass(frozen=True)
class Param:
    name: str
    schema: Mapping
    description: str = ""
    required: bool = False


@dataclass
class Operation:
    method: str
    path: str  # OpenAPI style, relative to /v1
    operation_id: str
    summary: str
    description: str
    tag: str
    query: Sequence[Param]
    body: Mapping | None
    body_required: bool
    status: int
    response: Mapping | None
    response_description: str
    response_headers: Mapping[str, Mapping]
    auth: str | None  # "session", "basic", "enrollment" (a VRA's one-time token: zvm/peer/enrollment.py)
    errors: tuple[int, ...]
    cache: bool  # the answer depends only on the stored state (zvm/api/cache.py)
    role: str | None  # the least role (zvm.models.ROLES) a session's user needs; None: no session is used
    own_transaction: bool  # the handler writes and audits in its own short transactions (login)
    handler: Callable = field(repr=False)

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD")

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def _flask_rule(path: str) -> str:
    return re.sub(r"{(\w+)}", r"<\1>", path)


class ApiBlueprint(Blueprint):
    """A Flask blueprint whose routes carry their OpenAPI operation."""

    def __init__(self, name: str, import_name: str, *, tag: str, description: str = ""):
        super().__init__(name, import_name)
        self.tag = tag
        self.tag_description = description
        self.operations: list[Operation] = []

    def operation(self, method: str, path: str, *, summary: str, description: str = "",
                  query: Sequence[Param] = (), body: Mapping | None = None, body_required: bool = True,
                  status: int = 200, response: Mapping | None = None, response_description: str = "",
                  response_headers: Mapping[str, Mapping] | None = None, auth: str | None = "session",
                  errors: Sequence[int] = (), cache: bool | None = None, role: str | None = None,
                  own_transaction: bool = False):
        if role is not None and role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        if auth == "session":
            role = role or ("viewer" if method in ("GET", "HEAD") else "admin")
        elif role is not None:
            raise ValueError("only operations called with a session declare a role")

        def decorate(fn: Callable) -> Callable:
            errs = {400, 405, 503, *errors}
            if auth:
                errs.add(401)
            if auth == "session":
                errs.add(403)
            if "{" in path:
                errs.add(404)
            if body is not None:
                errs.add(415)
            op = Operation(method=method, path=path, operation_id=fn.__name__, summary=summary,
                           description=description or (inspect.getdoc(fn) or ""), tag=self.tag,
                           query=tuple(query), body=body, body_required=body_required, status=status,
                           response=response, response_description=response_description or summary,
                           response_headers=response_headers or {}, auth=auth, errors=tuple(sorted(errs)),
                           cache=(method == "GET") if cache is None else cache, role=role,
                           own_transaction=own_transaction, handler=fn)
            self.operations.append(op)
            view = _wrap(op)
            self.add_url_rule(_flask_rule(path), endpoint=fn.__name__, view_func=view, methods=[method])
            return fn

        return decorate


def _parse_query(op: Operation) -> dict:
    known = {p.name for p in op.query}
    unknown = sorted(set(request.args) - known)
    if unknown:
        # A mistyped filter must not silently widen the answer (?stauts=Failed listing every task).
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise ValidationError(f"unknown query parameter {unknown[0]!r}: {takes}", field=unknown[0])
    values = {}
    for param in op.query:
        raw = request.args.get(param.name)
        if raw is None:
            if param.required:
                raise ValidationError(f"query parameter {param.name} is required", field=param.name)
            continue
        values[param.name] = coerce_query(raw, param.schema, param.name)
    return values


def _parse_body(op: Operation):
    data = request.get_data(cache=True)
    # Only an empty body is no body: whitespace alone is a body, and not JSON (taken for none, a malformed
    # request used to create a draft).
    if not data:
        if op.body_required:
            raise ValidationError("this call needs a JSON body: see the OpenAPI document for its fields",
                                  field="body")
        return None
    if not request.is_json:
        raise UnsupportedMediaTypeError(
            "send the body as JSON with the header Content-Type: application/json", field="body")
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"the body is not valid JSON ({type(exc).__name__}: {str(exc)[:100]}): fix its "
                              "syntax", field="body") from None
    return check(payload, op.body, "", schemas.COMPONENTS)


def _wrap(op: Operation) -> Callable:
    from zvm.api import context  # late: context imports models and the service

    accepts = inspect.signature(op.handler).parameters

    @functools.wraps(op.handler)
    def view(**path_params):
        if op.auth == "session":
            context.require_session()
            context.require_role(op)
        elif op.auth == "enrollment" and not request.headers.get(ENROLLMENT_TOKEN_HEADER):
            raise SessionError(f"this call takes no session but the VRA's enrollment token, in the "
                               f"{ENROLLMENT_TOKEN_HEADER} header")
        def parsed() -> dict:
            kwargs = dict(path_params)
            query = _parse_query(op)
            if op.query or "query" in accepts:
                kwargs["query"] = query
            if op.body is not None:
                kwargs["body"] = _parse_body(op)
            return kwargs

        if op.own_transaction:
            return _respond(op, op.handler(**parsed()))
        if op.writes:
            # parsed inside: a malformed body or query is a refused request, audited like the others
            return _respond(op, context.run_write(op, lambda: op.handler(**parsed())))
        kwargs = parsed()
        if not op.cache:
            return _respond(op, op.handler(**kwargs))
        cache = context.service().response_cache
        answer = cache.answer(request.full_path, current_revision(), lambda: _body(op.handler(**kwargs)))
        encoding = choose_encoding(request.accept_encodings, len(answer.body))
        resp = flask.current_app.response_class(answer.encoded(encoding), status=op.status,
                                                mimetype="application/json")
        if encoding is not None:
            resp.headers["Content-Encoding"] = encoding
        if len(answer.body) >= COMPRESS_FROM:
            resp.headers["Vary"] = "Accept-Encoding"
        return resp

    return view


def _body(result) -> bytes:
    return (json.dumps(result, separators=(",", ":")) + "\n").encode()


def _respond(op: Operation, result) -> Response:
    if isinstance(result, Response):
        return result
    headers = {}
    if isinstance(result, tuple):
        result, headers = result
    if op.status == 204:
        resp = Response(status=204)
    else:
        resp = flask.current_app.response_class(_body(result), status=op.status, mimetype="application/json")
    resp.headers.update(headers)
    return resp


# --- the OpenAPI document --------------------------------------------------------------------------------

def _error_response(status: int) -> dict:
    return {"description": ERROR_STATUSES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation_doc(op: Operation) -> dict:
    doc: dict = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    description = op.description
    if op.role:
        doc["x-zvr-role"] = op.role
        description = f"{description}\n\nRole needed: {op.role}.".strip()
    if description:
        doc["description"] = description
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for n in op.path_params]
    params += [{"name": p.name, "in": "query", "required": p.required, "schema": dict(p.schema),
                **({"description": p.description} if p.description else {})} for p in op.query]
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": op.body}}}
    ok: dict = {"description": op.response_description}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": op.response}}
    if op.response_headers:
        ok["headers"] = {name: dict(h) for name, h in op.response_headers.items()}
    responses = {str(op.status): ok}
    for status in op.errors:
        responses[str(status)] = _error_response(status)
    doc["responses"] = responses
    if op.auth == "basic":
        doc["security"] = [{"basicAuth": []}]
    elif op.auth == "enrollment":
        doc["security"] = [{"enrollmentToken": []}]
    elif op.auth is None:
        doc["security"] = []
    return doc


def openapi_document(blueprints: Sequence[ApiBlueprint], *, version: str, prefix: str = "/v1") -> dict:
    paths: dict[str, dict] = {}
    tags = []
    for bp in blueprints:
        tags.append({"name": bp.tag, **({"description": bp.tag_description} if bp.tag_description else {})})
        for op in bp.operations:
            paths.setdefault(prefix + op.path, {})[op.method.lower()] = _operation_doc(op)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ZVM REST API",
            "version": version,
            "description": (
                "The ZVM manages one site: its vCenter inventory, the VRAs on its hosts, the pairing with "
                "the peer site, and the VPGs that replicate VMs to the recovery site. Log in with "
                "POST /v1/session/add (HTTP Basic) and send the token it returns in the x-zerto-session "
                "header on every other call. Each operation needs a role (x-zvr-role): viewer (read "
                "only), operator (failover tests, failover, move, checkpoints, pause and resume) or admin "
                "(everything). Errors are JSON objects with a stable Code and a Message that says what to "
                "fix."),
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas.COMPONENTS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "header", "name": "x-zerto-session"},
                "basicAuth": {"type": "http", "scheme": "basic"},
                "enrollmentToken": {"type": "apiKey", "in": "header", "name": ENROLLMENT_TOKEN_HEADER},
            },
        },
        "security": [{"session": []}],
    }
