"""Printing benchmark results: one JSON document, then the same figures as a markdown table."""

from __future__ import annotations

import json
import sys


def emit(name: str, rows: list[dict], extra: dict | None = None, out=sys.stdout) -> None:
    """Print ``{"benchmark": name, "rows": rows, ...extra}`` as JSON, then ``rows`` as a markdown table."""
    doc = {"benchmark": name, "rows": rows, **(extra or {})}
    print(json.dumps(doc, indent=2, sort_keys=False), file=out)
    if not rows:
        return
    cols = list(rows[0].keys())
    for row in rows[1:]:
        cols += [k for k in row if k not in cols]
    print(file=out)
    print("| " + " | ".join(cols) + " |", file=out)
    print("|" + "|".join("---" for _ in cols) + "|", file=out)
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |", file=out)
