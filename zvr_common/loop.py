"""The one base for background loops: a thread that calls `run_once()` every `interval` seconds.

Every long-running loop of the product (monitoring, task runner, recovery watch, checkpoints, promoter,
receiver, sync runner...) is a `Loop`. What they share, and what each used to write again:

- `start()` / `stop()` are idempotent; `stop()` wakes the loop and waits for the pass in progress to end.
- `wake()` runs the next pass now instead of after the interval (a task queued, room needed in a journal).
- `run_once()` is public and is what tests call directly, so no test sleeps to wait for a loop.
- A pass that raises does not end the loop: the next pass waits `interval * 2**failures`, capped at
  `max_backoff`, and the failure is logged with its traceback the first time, then at most once per
  `log_every` seconds as a count ("still failing, N times"), then once when a pass succeeds again. The last
  error is kept in `last_error` for the status a caller reports.
- `after_pass()` runs after every pass, failed or not (the manager closes its database connection there).
- `delay=` (a callable) replaces the fixed interval after a pass that succeeded, for a loop whose next
  pass falls due at a time it computes (the next checkpoint, a batch's deadline); failures still back off
  from `interval`.

Threads are daemons: a process that exits without `stop()` is not held up by a loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Loop:
    """Subclass and implement `run_once`; or pass `target=` for a loop around a plain function."""

    def __init__(
        self,
        name: str,
        interval: float,
        *,
        target: Callable[[], object] | None = None,
        delay: Callable[[], float] | None = None,
        max_backoff: float | None = None,
        log_every: float = 60.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0:
            raise ValueError(f"loop {name}: interval must be >= 0, not {interval}")
        self.name = name
        self.interval = interval
        self.max_backoff = max(interval, max_backoff if max_backoff is not None else 8 * interval)
        self.log_every = log_every
        self.failures = 0  # consecutive failed passes
        self.last_error: BaseException | None = None
        self._target = target
        self._delay = delay
        self._log = logger or log
        self._clock = clock
        self._last_logged: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._guard = threading.Lock()  # start/stop from several threads

    # -- what a subclass provides -------------------------------------------------------------------

    def run_once(self) -> object:
        """One pass. Tests call it directly; the thread calls it every `interval`."""
        if self._target is None:
            raise NotImplementedError(f"loop {self.name}: implement run_once or pass target=")
        return self._target()

    def after_pass(self) -> None:
        """Called after every pass of the thread, failed or not."""

    # -- control ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once stop() was called: a long pass may check it to end early."""
        return self._stop.is_set()

    def start(self) -> None:
        with self._guard:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        with self._guard:
            thread, self._thread = self._thread, None
            self._stop.set()  # also when never started: `stopping` then tells a caller's waits to give up
            if thread is None:
                return
            self._wake.set()
        if thread is not threading.current_thread():
            thread.join(timeout)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` inside a pass, ending early on stop(); True if stopping."""
        return self._stop.wait(seconds)

    # -- the thread ---------------------------------------------------------------------------------

    def next_delay(self) -> float:
        """Seconds before the next pass: the interval (or what `delay()` says), doubled per consecutive
        failure up to max_backoff."""
        if not self.failures:
            return self.interval if self._delay is None else max(0.0, self._delay())
        return min(self.max_backoff, self.interval * (2 ** min(self.failures, 30)))

    def pass_once(self) -> bool:
        """One pass as the thread runs it (errors caught, counted and logged); True if it succeeded."""
        try:
            self.run_once()
        except Exception as exc:  # noqa: BLE001 - a loop outlives a failed pass; the error is kept and logged
            self._failed(exc)
            return False
        else:
            self._succeeded()
            return True
        finally:
            try:
                self.after_pass()
            except Exception:  # noqa: BLE001
                self._log.exception("loop %s: after_pass failed", self.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pass_once()
            self._wake.wait(self.next_delay())
            self._wake.clear()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = exc
        now = self._clock()
        if self.failures == 1:
            self._log.error("loop %s: pass failed: %s", self.name, exc, exc_info=exc)
            self._last_logged = now
        elif self._last_logged is None or now - self._last_logged >= self.log_every:
            self._log.error("loop %s: still failing (%d passes in a row): %s", self.name, self.failures, exc)
            self._last_logged = now

    def _succeeded(self) -> None:
        if self.failures:
            self._log.warning("loop %s: passes succeed again after %d failures", self.name, self.failures)
        self.failures = 0
        self.last_error = None
        self._last_logged = None
