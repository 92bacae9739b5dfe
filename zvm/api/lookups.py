"""The lookup lists of the enumerations (``GET /v1/vpgs/statuses`` ...): each the names of one table of
zvm/enums.py in number order, so a script can turn a number it was answered back into a name."""

from __future__ import annotations

from zvm import enums
from zvm.api.spec import ApiBlueprint

bp = ApiBlueprint("lookups", __name__, tag="Lookups",
                  description="The names of the enumerations, in number order: the number is the index.")

NAMES = {"type": "array", "items": {"type": "string"}}


def _route(path: str, table: type[enums.ZertoEnum]) -> None:
    def lookup():
        return table.names()

    lookup.__name__ = "lookup_" + path.strip("/").replace("/", "_")
    lookup.__doc__ = f"{table.__name__}: {table.expected()}."
    bp.operation("GET", path, summary=f"The values of {table.__name__}", response=NAMES)(lookup)


for _path, _table in enums.LOOKUPS.items():
    _route(_path, _table)
