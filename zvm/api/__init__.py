"""The REST API (/v1): one blueprint per resource, each declaring its routes with their specs (spec.py).

``create_app`` lives in zvm/api/app.py.
"""

from __future__ import annotations


def blueprints() -> list:
    from zvm.api import (
        lookups,
        monitoring,
        openapi,
        recoverability,
        recovery,
        session,
        sites,
        statistics,
        users,
        vms,
        vpgs,
        vpgsettings,
        vras,
    )

    return [session.bp, users.bp, sites.localsite, sites.peersites, sites.vsites, vras.bp, vpgsettings.bp, vpgs.bp,
            recovery.bp, vms.bp, monitoring.tasks, monitoring.alerts, monitoring.events, recovery.reports,
            statistics.bp, recoverability.bp, lookups.bp, openapi.bp]


def create_app(*args, **kwargs):
    from zvm.api.app import create_app as _create_app

    return _create_app(*args, **kwargs)
