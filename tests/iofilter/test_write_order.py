"""`WriteOrder` on its own, with real threads: overlapping claims wait for the holder's hand-off, waiters
hand off first (two threads claiming each other's ranges do not deadlock), zeroing takes the volume.

The end-to-end check (four NBD connections racing, replica = source) is tests/faults/test_write_order.py.
"""

from __future__ import annotations

import threading

from vra_appliance.iofilter.write_order import WriteOrder

KiB = 1024


def joined(t: threading.Thread) -> bool:
    t.join(20)  # a guard against a hang, not a timing assertion
    return not t.is_alive()


def test_an_overlapping_claim_waits_until_the_holder_hands_off_and_asks_it_to():
    order = WriteOrder()
    order.claim(0, 4 * KiB, lambda: None)
    events = []

    def other():
        order.claim(2 * KiB, 4 * KiB, lambda: events.append("other hand-off"))
        events.append("other claimed")

    t = threading.Thread(target=other)
    t.start()
    while threading.get_ident() not in order.wanted:  # the other thread asked us to hand off
        t.join(0.001)
    assert events == []
    events.append("released")
    order.release()
    assert joined(t)
    assert events == ["released", "other claimed"]  # it held nothing: no hand-off of its own


def test_claims_of_other_stripes_do_not_wait_and_the_same_thread_never_waits_for_itself():
    order = WriteOrder()
    order.claim(0, 4 * KiB, lambda: None)
    order.claim(0, 8 * KiB, lambda: None)  # its own range again
    done = []
    t = threading.Thread(target=lambda: (order.claim(1 << 20, 4 * KiB, lambda: None), done.append(1)))
    t.start()
    assert joined(t) and done == [1]


def test_two_threads_claiming_each_others_ranges_hand_off_instead_of_deadlocking():
    order = WriteOrder()
    both_hold = threading.Barrier(2)
    log = []

    def writer(mine: int, theirs: int, name: str):
        order.claim(mine, 4 * KiB, lambda: None)
        both_hold.wait()

        def hand_off():
            log.append(f"{name} hands off")
            order.release()

        order.claim(theirs, 4 * KiB, hand_off)
        log.append(f"{name} claimed")
        order.release()

    a = threading.Thread(target=writer, args=(0, 1 << 20, "a"))
    b = threading.Thread(target=writer, args=(1 << 20, 0, "b"))
    a.start()
    b.start()
    assert joined(a) and joined(b)
    assert {"a claimed", "b claimed"} <= set(log)
    handed = [e[0] for e in log if e.endswith("hands off")]
    assert handed  # one of them at least gave its range up, and before it took the other's
    for name in handed:
        assert log.index(f"{name} hands off") < log.index(f"{name} claimed")


def test_zeroing_waits_for_every_range_held_and_holds_new_claims_back():
    order = WriteOrder()
    order.claim(8 << 20, 4 * KiB, lambda: None)  # far from the zeroed range: a stripe still held
    log = []
    inside = threading.Event()
    leave = threading.Event()

    def zero():
        with order.exclusive():
            log.append("zeroing")
            inside.set()
            assert leave.wait(20)

    z = threading.Thread(target=zero)
    z.start()
    while threading.get_ident() not in order.wanted:
        z.join(0.001)
    assert log == []
    log.append("released")
    order.release()
    assert inside.wait(20)
    w = threading.Thread(target=lambda: (order.claim(1 << 30, 4 * KiB, lambda: None), log.append("claimed")))
    w.start()
    w.join(0.05)
    assert log == ["released", "zeroing"]  # the claim is held back while zeroing
    leave.set()
    assert joined(z) and joined(w)
    assert log == ["released", "zeroing", "claimed"]
