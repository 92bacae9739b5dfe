"""Login throttling, per user name and per client address, kept in the database so every worker sees it.

Each failed login counts against two keys, ``user:NAME`` and ``addr:ADDRESS`` (an IPv6 address by its /64). The first ``free_failures``
of a key cost nothing (typos); each further one blocks the key for twice as long as the one before (1 s,
2 s, 4 s ... at most ``max_delay``). While either key of an attempt is blocked, the attempt is refused at
once (``TooManyAttemptsError``: HTTP 429 with Retry-After), its password is not checked and nothing is
written, so a flood costs neither scrypt runs nor database writes. A key's count is forgotten after
``forget_after`` seconds without a failure; a user name's count is also reset by a successful login (an
address's is not: one good account must not launder guesses at others).

The first block of a streak is reported once, as a ``LoginThrottled`` event naming the user and the address.

``clock`` is injectable (tests give a fake one; the policy math, ``delay_after``, is pure).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from zvm import models as m
from zvm.db import is_postgres
from zvm.errors import TooManyAttemptsError


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    max_delay: float = 300.0
    forget_after: float = 900.0

    def delay_after(self, failures: int) -> float:
        """Seconds a key is blocked after its ``failures``-th failure in a row."""
        if failures <= self.free_failures:
            return 0.0
        return min(self.max_delay, 2.0 ** min(failures - self.free_failures - 1, 62))


def client_key(address: str) -> str:
    """An IPv6 client counts by its /64 (one host usually holds a whole /64 and could rotate through it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:160]
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def keys(username: str, address: str) -> list[str]:
    return [f"user:{username[:128]}", f"addr:{client_key(address)}"]


class LoginThrottle:
    def __init__(self, policy: ThrottlePolicy | None = None, clock: Callable[[], float] = time.time):
        self.policy = policy or ThrottlePolicy()
        self.clock = clock

    def check(self, username: str, address: str) -> None:
        """Refuse (429) an attempt while its user name or its address is blocked. Reads only."""
        now = self.clock()
        rows = m.LoginFailure.select().where(m.LoginFailure.key.in_(keys(username, address)))
        wait = max((r.blocked_until - now for r in rows), default=0.0)
        if wait > 0:
            raise TooManyAttemptsError(
                f"too many failed logins for this user or from this address: wait {int(wait + 0.999)} s, "
                "then log in again with the right password", retry_after=int(wait + 0.999))

    def failed(self, username: str, address: str) -> str | None:
        """Count a failed login (call inside the transaction that audits it). Returns the description of a
        lockout that starts now (for its event), else None."""
        now = self.clock()
        started = []
        self.forget_stale()
        for key in keys(username, address):
            # Insert-or-nothing, then the row locked: two workers counting the same key at once both count.
            m.LoginFailure.insert(key=key, failures=0, last_failure_at=now).on_conflict_ignore().execute()
            query = m.LoginFailure.select().where(m.LoginFailure.key == key)
            if is_postgres(m.LoginFailure._meta.database.obj):
                query = query.for_update()  # SQLite's transactions hold the write lock from BEGIN (zvm.db)
            row = query.get()
            row.failures += 1
            row.last_failure_at = now
            delay = self.policy.delay_after(row.failures)
            row.blocked_until = now + delay if delay else 0.0
            if delay and not row.alerted:
                row.alerted = True
                started.append((key, row.failures, delay))
            row.save()
        if not started:
            return None
        key, failures, delay = started[0]
        who = "user" if key.startswith("user:") else "client"
        return (f"login failures for user {username[:128]!r} from {address or 'an unknown address'}: "
                f"{failures} in a row for this {who}; its logins are refused for {delay:.0f} s, longer after each "
                f"further failure (at most {self.policy.max_delay:.0f} s)")

    def succeeded(self, username: str) -> None:
        m.LoginFailure.delete().where(m.LoginFailure.key == keys(username, "")[0]).execute()

    def forget_stale(self) -> int:
        """Drop the counts of keys idle longer than ``forget_after`` (the table stays small)."""
        return m.LoginFailure.delete().where(
            m.LoginFailure.last_failure_at < self.clock() - self.policy.forget_after).execute()
