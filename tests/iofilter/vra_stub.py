"""A VRA stand-in for tests: records what a `SplitListener` hands it, or applies it to a replica file.

Run as a process (``python -m tests.iofilter.vra_stub ADDRESS REPLICA [STALL_AFTER]``) it applies every
write and zero to REPLICA and prints one line per event, so a test can kill it with SIGKILL in the middle of
a load; with STALL_AFTER it stops consuming (blocks in its handler) after that many writes and says
"stalled", so frames pile up unconsumed in the filter's queue or ring.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from vra_appliance.protect.split_listener import SplitListener


class RecordingVra:
    """Keeps every event in order: ("hello", filter_id, volumes), ("write", volume, offset, data, seq),
    ("zero", volume, offset, length, seq), ("mark", checkpoint_id, volumes), ("disconnect", filter_id)."""

    def __init__(self, gate: threading.Event | None = None):
        self.events: list[tuple] = []
        self.cond = threading.Condition()
        self.gate = gate  # when set, on_write blocks until the gate is set (a slow VRA)

    def _add(self, event: tuple) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def on_hello(self, filter_id, volumes):
        self._add(("hello", filter_id, list(volumes)))

    def on_write(self, filter_id, volume_id, offset, data, filter_seq):
        if self.gate is not None:
            self.gate.wait()
        self._add(("write", volume_id, offset, data, filter_seq))

    def on_zero(self, filter_id, volume_id, offset, length, filter_seq):
        self._add(("zero", volume_id, offset, length, filter_seq))

    def on_mark(self, filter_id, checkpoint_id, volumes):
        self._add(("mark", checkpoint_id, list(volumes)))

    def on_disconnect(self, filter_id):
        self._add(("disconnect", filter_id))

    def kinds(self) -> list[str]:
        with self.cond:
            return [e[0] for e in self.events]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.events), timeout)


class ReplicaVra:
    """Applies writes and zeroes to a replica file (a stand-in for the journal-and-replica of a real VRA)."""

    def __init__(self, replica: str, stall_after: int | None = None):
        self.fd = os.open(replica, os.O_RDWR)
        self.writes = 0
        self.stall_after = stall_after
        # "listening" is the first line: a filter already retrying connects the moment the listener starts,
        # and its hello must not be printed before it
        self.listening = threading.Event()

    def on_hello(self, filter_id, volumes):
        self.listening.wait()
        print("hello", filter_id, flush=True)

    def on_write(self, filter_id, volume_id, offset, data, filter_seq):
        if self.writes == self.stall_after:
            print("stalled", flush=True)
            threading.Event().wait()  # until SIGKILL
        os.pwrite(self.fd, data, offset)
        self.writes += 1
        if self.writes == 1000:
            print("writes 1000", flush=True)

    def on_zero(self, filter_id, volume_id, offset, length, filter_seq):
        os.pwrite(self.fd, bytes(length), offset)

    def on_mark(self, filter_id, checkpoint_id, volumes):
        print("mark", checkpoint_id, flush=True)

    def on_disconnect(self, filter_id):
        print("disconnect", filter_id, flush=True)


def main(argv: list[str]) -> int:
    address, replica, *stall = argv
    vra = ReplicaVra(replica, int(stall[0]) if stall else None)
    listener = SplitListener(address, vra)
    listener.start()
    print("listening", flush=True)
    vra.listening.set()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    listener.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
