"""Throttling a sync by wrapping what it yields (restic's wrapBackend): the engines know nothing of limits.

A sync's extents go through the same bandwidth limit as replication: :class:`VpgShare` adapts the protect
side's site throttle (``vra_appliance.protect.throttle.SiteThrottle``, a token bucket per VPG whose rate is
the VPG's share of the site limit) to the one-method :class:`Throttle` that :func:`throttled` needs, so a
sync and the VPG's stream draw on one bucket. Tests give :func:`throttled` any object with ``acquire``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from vra_appliance.sync.volume import Extent


class Throttle(Protocol):
    def acquire(self, nbytes: int) -> float:
        """Block until ``nbytes`` may be sent; return the seconds waited."""
        ...


class VpgShare:
    """One VPG's share of a site throttle (anything with ``acquire(vpg, nbytes)``) as a Throttle."""

    def __init__(self, site_throttle, vpg: str) -> None:
        self.site = site_throttle
        self.vpg = vpg

    def acquire(self, nbytes: int) -> float:
        return self.site.acquire(self.vpg, nbytes)


def throttled(extents: Iterable[Extent], throttle: Throttle | None, overhead: int = 0) -> Iterator[Extent]:
    """Yield ``extents``, each after its bytes (plus ``overhead`` per extent) were taken from ``throttle``."""
    if throttle is None:
        yield from extents
        return
    for ext in extents:
        throttle.acquire(len(ext.data) + overhead)
        yield ext
