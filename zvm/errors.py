"""The ZVM's exception tree.

    ZvmError                      every error the product raises on purpose
    ├── TransientError            retry later: a peer, vCenter or VRA did not answer in time
    ├── PermanentError            stop and report: bad input, wrong credentials, a missing object
    │   ├── ConfigError           the configuration or a command-line option is wrong
    │   ├── AuthenticationError   credentials were refused
    │   └── NotFoundError         the named object does not exist
    └── CorruptionError           data cannot be trusted: resync

Third-party errors (vmodl faults, grpc.RpcError, peewee errors) are translated at the boundary with
``raise ... from`` so callers only handle these. Every message says what to do, without a stack trace.
"""


class ZvmError(Exception):
    """Base of every error the product raises on purpose."""


class TransientError(ZvmError):
    """A dependency did not answer; the same call may succeed later."""


class PermanentError(ZvmError):
    """The request cannot succeed as given; report it and stop."""


class ConfigError(PermanentError):
    """A configuration value or command-line option is wrong."""


class AuthenticationError(PermanentError):
    """Credentials were refused."""


class NotFoundError(PermanentError):
    """The named object does not exist."""


class CorruptionError(ZvmError):
    """Data failed a check and cannot be trusted; a resync is needed."""
