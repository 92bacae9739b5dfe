"""The site's bandwidth limit: a token bucket per VPG whose rate is the VPG's share of the site limit.

A VPG's share is ``limit * priority / sum(priority of active VPGs)``, where active means it asked for
bandwidth in the last ``active_window`` seconds: an idle VPG's share goes to the busy ones. Buckets reserve
(the balance may go negative and the caller waits it out), so a batch larger than the burst still passes.

``ThrottledTransport`` wraps any Transport (restic's wrapBackend): the transport knows nothing of limits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from vra_appliance.stream.transport import Ack, Hello, Transport, Welcome
from vra_appliance.stream.wire import Batch


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def reserve(self, n: float, now: float) -> float:
        """Take ``n`` tokens; return how long to wait before using them (0 when they were there)."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class SiteThrottle:
    """Bandwidth limit of a site (bytes/s, 0 = unlimited), shared by VPG priority."""

    def __init__(
        self,
        limit_bytes_per_s: float = 0.0,
        *,
        burst_seconds: float = 0.05,
        active_window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = float(limit_bytes_per_s)
        self.burst_seconds = burst_seconds
        self.active_window = active_window
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._priority: dict[str, int] = {}
        self._last_active: dict[str, float] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.waited_s: dict[str, float] = {}

    def set_limit(self, limit_bytes_per_s: float) -> None:
        with self._lock:
            self.limit = float(limit_bytes_per_s)

    def register(self, vpg: str, priority: int = 1) -> None:
        with self._lock:
            self._priority[vpg] = max(1, int(priority or 1))

    def unregister(self, vpg: str) -> None:
        with self._lock:
            for d in (self._priority, self._last_active, self._buckets):
                d.pop(vpg, None)

    def share(self, vpg: str, now: float | None = None) -> float:
        """The VPG's current rate in bytes/s (0: unlimited)."""
        with self._lock:
            return self._share(vpg, self._clock() if now is None else now)

    def _share(self, vpg: str, now: float) -> float:
        if self.limit <= 0:
            return 0.0
        active = [v for v, t in self._last_active.items() if now - t <= self.active_window]
        if vpg not in active:
            active.append(vpg)
        total = sum(self._priority.get(v, 1) for v in active)
        return self.limit * self._priority.get(vpg, 1) / total

    def reserve(self, vpg: str, nbytes: int, now: float | None = None) -> float:
        """Take ``nbytes`` of the VPG's share; return the seconds to wait before sending them."""
        with self._lock:
            now = self._clock() if now is None else now
            self._last_active[vpg] = now
            rate = self._share(vpg, now)
            bucket = self._buckets.get(vpg)
            if bucket is None:
                bucket = self._buckets[vpg] = TokenBucket(rate, rate * self.burst_seconds, now)
            bucket.rate, bucket.burst = rate, max(rate * self.burst_seconds, 1.0)
            return bucket.reserve(nbytes, now)

    def acquire(self, vpg: str, nbytes: int) -> float:
        """Block until ``nbytes`` may be sent; return the seconds waited."""
        wait = self.reserve(vpg, nbytes)
        if wait > 0:
            self._sleep(wait)
        self.waited_s[vpg] = self.waited_s.get(vpg, 0.0) + wait
        return wait


class ThrottledTransport:
    """A Transport that first takes a batch's wire bytes from the site throttle."""

    def __init__(self, inner: Transport, throttle: SiteThrottle, vpg: str) -> None:
        self.inner = inner
        self.throttle = throttle
        self.vpg = vpg

    def open(self, hello: Hello) -> Welcome:
        return self.inner.open(hello)

    def send(self, batch: Batch) -> Future[Ack]:
        self.throttle.acquire(self.vpg, batch.wire_bytes)
        return self.inner.send(batch)

    def close(self) -> None:
        self.inner.close()

    def shutdown(self) -> None:
        getattr(self.inner, "shutdown", self.inner.close)()
