"""Queueing tasks from a request: the one place the API turns a request into a task (zvm.orchestration.tasks).

``queue_task`` gives the task the session's user and the ZVM's secrets box for secret parameters, and
``queued`` notes a task (also one a domain function queued: a recovery operation's) so that the task
runner is woken once the request ends (zvm.api.app). Domain code takes the user as an argument; only this
layer reads the request context.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import g

from zvm import models as m
from zvm.api.context import current_user, service
from zvm.orchestration.tasks import create_task


def queued(task: m.Task) -> m.Task:
    g.setdefault("queued_tasks", []).append(task.identifier)
    return task


def queue_task(kind: str, *, params: dict | None = None, secret_params: Iterable[str] = (),
               vpg: str | None = None, vra: str | None = None, site: str | None = None) -> m.Task:
    secret_params = tuple(secret_params)
    return queued(create_task(kind, params=params, secret_params=secret_params,
                              secrets=service().secrets if secret_params else None,
                              vpg=vpg, vra=vra, site=site, user=current_user()))
