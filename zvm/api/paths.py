"""Case-insensitive paths under /v1, as Zerto's API has them: ``/v1/VPGs/{id}/FailoverTest`` is
``/v1/vpgs/{id}/failoverTest``.

Before routing, each fixed segment of the path is spelled as the route declares it, walking the routes'
segments as a tree (a fixed segment wins over a parameter, as in Werkzeug's routing); the values of path
parameters (identifiers) stay exactly as given. One WSGI wrapper, so the routes, their checks and the
OpenAPI document keep one spelling each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_PARAM = re.compile(r"^<[^>]+>$")


class _Node:
    __slots__ = ("fixed", "param")

    def __init__(self):
        self.fixed: dict[str, tuple[str, _Node]] = {}  # lower-case segment -> (declared spelling, child)
        self.param: _Node | None = None


class CaseInsensitivePaths:
    """WSGI middleware: respells the fixed segments of request paths under ``prefix`` as the rules do."""

    def __init__(self, app: Callable, rules: Iterable[str], prefix: str = "/v1"):
        self.app = app
        self.prefix = prefix.lower()
        self.root = _Node()
        for rule in rules:
            node = self.root
            for segment in rule.strip("/").split("/"):
                if _PARAM.match(segment):
                    node.param = node.param or _Node()
                    node = node.param
                else:
                    spelled, child = node.fixed.setdefault(segment.lower(), (segment, _Node()))
                    node = child

    def canonical(self, path: str) -> str:
        segments = path.split("/")
        node = self.root
        for i, segment in enumerate(segments):
            if i == 0 and segment == "":
                continue
            fixed = node.fixed.get(segment.lower())
            if fixed is not None:
                segments[i], node = fixed
            elif node.param is not None and segment:
                node = node.param
            else:
                break
        return "/".join(segments)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.lower().startswith(self.prefix + "/"):
            environ["PATH_INFO"] = self.canonical(path)
        return self.app(environ, start_response)
