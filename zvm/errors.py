"""The ZVM's exception tree.

    ZvmError                      every error the product raises on purpose
    ├── TransientError            retry later: a peer, vCenter, VRA or the database did not answer in time
    │   └── TooManyAttemptsError  too many failed logins: wait ``retry_after`` seconds (HTTP 429)
    ├── PermanentError            stop and report: bad input, wrong credentials, a missing object
    │   ├── ConfigError           the configuration or a command-line option is wrong
    │   ├── ValidationError       a request's body or parameters are wrong (names the field)
    │   │   └── UnsupportedMediaTypeError   the body is not JSON
    │   ├── ConflictError         the object's state does not allow this now (e.g. a VPG is being deleted)
    │   ├── AuthenticationError   credentials were refused
    │   │   └── SessionError      no session, or it expired: log in again
    │   ├── AuthorizationError    the user's role does not allow this operation (HTTP 403)
    │   └── NotFoundError         the named object does not exist
    └── CorruptionError           data cannot be trusted: resync

Third-party errors (vmodl faults, grpc.RpcError, peewee errors) are translated at the boundary with
``raise ... from`` so callers only handle these. Every message says what to do, without a stack trace.

Each class carries ``code``, a stable machine-readable name that the REST API returns next to the message
(``{"Code": ..., "Message": ...}``) and ``http_status``, the status the API answers with. A raise site may
give a more specific code (``NotFoundError("...", code="VpgNotFound")``); the codes are listed in
docs/API.md and in the OpenAPI document.
"""

from __future__ import annotations


class ZvmError(Exception):
    """Base of every error the product raises on purpose."""

    code = "Error"
    http_status = 500

    def __init__(self, message: str = "", *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.field = field

    @property
    def message(self) -> str:
        return str(self)


class TransientError(ZvmError):
    """A dependency did not answer; the same call may succeed later."""

    code = "Unavailable"
    http_status = 503


class TooManyAttemptsError(TransientError):
    """Logins from this client or for this user failed too often: none is checked for ``retry_after`` s."""

    code = "TooManyAttempts"
    http_status = 429

    def __init__(self, message: str = "", *, retry_after: int = 1, **kw):
        super().__init__(message, **kw)
        self.retry_after = max(1, int(retry_after))


class PermanentError(ZvmError):
    """The request cannot succeed as given; report it and stop."""

    code = "Refused"
    http_status = 400


class ConfigError(PermanentError):
    """A configuration value or command-line option is wrong."""

    code = "InvalidConfiguration"


class ValidationError(PermanentError):
    """A request's body or parameters do not match what the call accepts; ``field`` names the culprit."""

    code = "InvalidRequest"


class UnsupportedMediaTypeError(ValidationError):
    """The body is not sent as JSON."""

    code = "UnsupportedMediaType"
    http_status = 415


class ConflictError(PermanentError):
    """The object exists but its state forbids the operation now; the message says what to wait for."""

    code = "Conflict"
    http_status = 409


class AuthenticationError(PermanentError):
    """Credentials were refused."""

    code = "AuthenticationFailed"
    http_status = 401


class SessionError(AuthenticationError):
    """The call needs a session (header ``x-zerto-session``) and has none, or its session expired."""

    code = "SessionRequired"


class AuthorizationError(PermanentError):
    """The user is logged in, but its role does not allow the operation."""

    code = "NotPermitted"
    http_status = 403


class NotFoundError(PermanentError):
    """The named object does not exist."""

    code = "NotFound"
    http_status = 404


class CorruptionError(ZvmError):
    """Data failed a check and cannot be trusted; a resync is needed."""

    code = "Corruption"
    http_status = 500
