"""`WriteOrder`: one volume's writes reach the split stream in the order they reached the volume.

The NBD server runs one thread per connection and the filter advertises multi-conn, so two connections
may write overlapping ranges at the same time. Each connection thread writes to the volume at once but
hands its completed writes to the splitter only at the end of its batch (`SplittingBackend.batch_done`),
so without this two overlapping writes could reach the file in one order and the replica in the other.

The rule: a thread claims the range of a write before it writes it to the volume, and releases every range
it holds once it has handed its writes to the splitter. A range that overlaps one held by another thread
waits until that thread has handed its writes over; before waiting, the thread hands off its own (so no
waiter holds anything, and threads waiting for each other cannot form a cycle), and it asks the holder to
hand off early (`wanted`), which the holder checks after each write. The VM waits for another connection's
batch at most, never for the VRA.

Ranges are tracked in 64 KiB stripes (a dict lookup per stripe; a 4 KiB write costs one): two writes in
one stripe that do not overlap are ordered too, which costs a little waiting, never correctness. Zeroing
(TRIM, WRITE_ZEROES) may cover the whole volume, so it takes the volume exclusively instead (`exclusive`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STRIPE_SHIFT = 16  # 64 KiB


class WriteOrder:
    """The ranges of one volume that threads wrote to it and have not handed to the splitter yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._owner: dict[int, int] = {}  # stripe -> the thread holding it
        self._held: dict[int, list[int]] = {}  # thread -> its stripes
        self._exclusive: int | None = None  # a thread zeroing: nobody else claims anything meanwhile
        self.wanted: set[int] = set()  # threads someone waits for: they should hand off now

    def claim(self, offset: int, length: int, hand_off: Callable[[], None]) -> None:
        """Hold ``[offset, offset + length)`` for the calling thread; waits while another thread holds an
        overlapping range (``hand_off()`` first, outside the lock, if the caller holds any)."""
        me = threading.get_ident()
        first = offset >> STRIPE_SHIFT
        last = (offset + max(length, 1) - 1) >> STRIPE_SHIFT
        if first == last:  # the common case, kept short: it runs for every write
            with self._lock:
                owner = self._owner.get(first)
                if self._exclusive is None and (owner is None or owner == me):
                    self._owner[first] = me
                    held = self._held.get(me)
                    if held is None:
                        self._held[me] = [first]
                    else:
                        held.append(first)
                    return
        while True:
            with self._cond:
                while True:
                    owner = self._blocker(me, first, last)
                    if owner is None:
                        held = self._held.get(me)
                        if held is None:
                            held = self._held[me] = []
                        set_owner = self._owner.__setitem__
                        for stripe in range(first, last + 1):
                            set_owner(stripe, me)
                            held.append(stripe)
                        return
                    if me in self._held:
                        break  # hand off ours before waiting
                    self.wanted.add(owner)
                    self._cond.wait()
            hand_off()

    def _blocker(self, me: int, first: int, last: int) -> int | None:
        if self._exclusive is not None and self._exclusive != me:
            return self._exclusive
        owner_of = self._owner.get
        for stripe in range(first, last + 1):
            owner = owner_of(stripe)
            if owner is not None and owner != me:
                return owner
        return None

    def release(self) -> None:
        """The calling thread handed every write it made to the splitter: its ranges are free."""
        me = threading.get_ident()
        if me not in self._held and me not in self.wanted:
            return
        with self._cond:
            owner = self._owner
            for stripe in self._held.pop(me, ()):
                if owner.get(stripe) == me:
                    del owner[stripe]
            self.wanted.discard(me)
            self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """``with order.exclusive():`` the whole volume for the calling thread, once every other thread
        handed off what it wrote (zeroing, whose range may be any size). The caller must hold no range (it
        hands off first), as a waiter in `claim` does."""
        me = threading.get_ident()
        with self._cond:
            while self._exclusive is not None:
                self.wanted.add(self._exclusive)
                self._cond.wait()
            self._exclusive = me  # from now on nobody claims; wait for what the others hold
            while others := [t for t in self._held if t != me]:
                self.wanted.update(others)
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = None
                self.wanted.discard(me)
                self._cond.notify_all()
