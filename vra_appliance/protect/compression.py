"""The adaptive zstd level of a protect VRA.

Compression competes with everything else for the CPU, and the link (or the site's throttle) may be the
narrower pipe. When the sender spends most of its time compressing, the level goes down; when it mostly waits
for the link while compression is cheap, the level goes up, since every byte saved is then a byte of
bandwidth.
"""

from __future__ import annotations

MIN_LEVEL = -5  # zstd's "fast" levels: less ratio, more speed
MAX_LEVEL = 9


class AdaptiveLevel:
    """Chooses the zstd level from how the sender spent its time over the last window of batches.

    ``observe(compress_s, wait_s, elapsed_s)``: seconds spent compressing, seconds blocked on the link
    (throttle, flow control, full window), and wall time, for one batch. Every ``window`` batches the level
    moves by one step at most: down when compressing took more than ``busy_high`` of the time, up when
    waiting on the link took more than ``wait_high`` and compressing less than ``busy_low``.
    """

    def __init__(
        self,
        level: int = 1,
        *,
        min_level: int = MIN_LEVEL,
        max_level: int = MAX_LEVEL,
        window: int = 16,
        busy_high: float = 0.5,
        busy_low: float = 0.25,
        wait_high: float = 0.3,
    ) -> None:
        self.level = level
        self.min_level, self.max_level = min_level, max_level
        self.window = window
        self.busy_high, self.busy_low, self.wait_high = busy_high, busy_low, wait_high
        self._n = 0
        self._compress = self._wait = self._elapsed = 0.0

    def observe(self, compress_s: float, wait_s: float, elapsed_s: float) -> int:
        self._n += 1
        self._compress += compress_s
        self._wait += wait_s
        self._elapsed += max(elapsed_s, compress_s + wait_s)
        if self._n >= self.window and self._elapsed > 0:
            busy = self._compress / self._elapsed
            wait = self._wait / self._elapsed
            if busy > self.busy_high and self.level > self.min_level:
                self.level -= 1
            elif wait > self.wait_high and busy < self.busy_low and self.level < self.max_level:
                self.level += 1
            self._n = 0
            self._compress = self._wait = self._elapsed = 0.0
        return self.level
