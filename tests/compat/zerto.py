"""A script's view of the ZVM API, written the way Zerto's public clients call it (the zvma library, the
ZertoApiWrapper module): plain ``requests``, ``POST /v1/session/add`` with HTTP Basic and the
``x-zerto-session`` header, Zerto's paths and field casing, enumerations as numbers. Nothing of zvm.* is
used here, so that the suite checks the wire, not our own client."""

from __future__ import annotations

import time

import requests

# Zerto's numbers, as a script written from the public documentation has them
TASK_IN_PROGRESS, TASK_FAILED, TASK_COMPLETED = 1, 4, 6
VPG_MEETING_SLA = 1
PAIRED = 0
SHUTDOWN_FORCE = 2
COMMIT_NONE, COMMIT_COMMIT = 2, 1


class ZertoScript:
    def __init__(self, base: str):
        self.base = base.rstrip("/") + "/v1/"
        self.http = requests.Session()
        self.http.verify = False  # the lab's ZVMs serve plain HTTP on loopback or a self-made certificate

    def login(self, user: str, password: str) -> ZertoScript:
        resp = self.http.post(self.base + "session/add", auth=(user, password), timeout=30)
        resp.raise_for_status()
        self.http.headers["x-zerto-session"] = resp.headers["x-zerto-session"]
        self.http.headers["Content-Type"] = "application/json"
        return self

    def logout(self) -> int:
        return self.http.delete(self.base + "session", timeout=30).status_code

    def call(self, method: str, path: str, body=None, **params) -> requests.Response:
        return self.http.request(method, self.base + path.lstrip("/"), json=body, params=params or None,
                                 timeout=120)

    def ok(self, method: str, path: str, body=None, **params):
        resp = self.call(method, path, body, **params)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content.strip() else None

    def until(self, probe, timeout: float = 120):
        """``probe(self)`` until it answers something truthy (a state reached), or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (got := probe(self)):
            assert time.monotonic() < deadline, f"not reached within {timeout} s"
            time.sleep(1.0)
        return got

    def wait(self, task_id: str, timeout: float = 300) -> dict:
        """Poll GET /v1/tasks/{id} until Completed (6) or Failed (4), as Zerto's examples do."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.ok("GET", f"tasks/{task_id}")
            if task["Status"]["State"] in (TASK_COMPLETED, TASK_FAILED):
                assert task["Status"]["State"] == TASK_COMPLETED, task
                return task
            assert time.monotonic() < deadline, f"task {task_id} still {task['Status']} after {timeout} s"
            time.sleep(0.5)
