"""Issue 13 point 2: failed logins are throttled per user name and per client address (fake clock), a
throttled attempt costs no password hash and no write, and no write lock is held while a password is checked.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest

from tests.security.conftest import ADMIN_PASSWORD, login
from zvm import models as m
from zvm.api.throttle import ThrottlePolicy


def test_the_delay_doubles_after_the_free_failures_up_to_the_cap():
    policy = ThrottlePolicy(free_failures=5, max_delay=300)
    assert [policy.delay_after(n) for n in range(1, 12)] == [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32]
    assert policy.delay_after(40) == 300 and policy.delay_after(10**6) == 300


def test_a_user_name_is_throttled_from_any_address_with_retry_after(throttled_app, clock):
    app = throttled_app
    for i in range(5):
        assert login(app, "admin", "wrong", address=f"192.0.2.{i}").status_code == 401
    assert login(app, "admin", "wrong", address="192.0.2.50").status_code == 401  # the 6th: blocks 1 s
    refused = login(app, "admin", ADMIN_PASSWORD, address="192.0.2.51")  # even the right password waits
    assert refused.status_code == 429
    assert refused.json["Code"] == "TooManyAttempts" and refused.headers["Retry-After"] == "1"
    clock.advance(1)
    assert login(app, "admin", "wrong", address="192.0.2.52").status_code == 401  # the 7th: blocks 2 s
    assert login(app, "admin", "wrong").headers["Retry-After"] == "2"
    clock.advance(2)
    assert login(app, "admin", ADMIN_PASSWORD).status_code == 200
    # a success resets the user name's count: the next failure is free again
    assert login(app, "admin", "wrong", address="192.0.2.99").status_code == 401
    assert login(app, "admin", ADMIN_PASSWORD, address="192.0.2.98").status_code == 200


def test_an_address_is_throttled_whatever_user_names_it_tries(throttled_app, clock):
    app = throttled_app
    for i in range(6):
        assert login(app, f"guess{i}", "wrong", address="203.0.113.9").status_code == 401
    assert login(app, "someone-else", "wrong", address="203.0.113.9").status_code == 429
    assert login(app, "someone-else", "wrong", address="203.0.113.10").status_code == 401  # another address
    # one good login from the address does not clear the address (it could launder guesses)
    clock.advance(1)
    assert login(app, "admin", ADMIN_PASSWORD, address="203.0.113.9").status_code == 200
    assert login(app, "guess9", "wrong", address="203.0.113.9").status_code == 401
    assert login(app, "guess10", "wrong", address="203.0.113.9").status_code == 429
    # after a quiet while the address's count is forgotten
    clock.advance(3600)
    for i in range(5):
        assert login(app, f"later{i}", "wrong", address="203.0.113.9").status_code == 401


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself():
    from zvm.api.throttle import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("") == ""


def test_a_throttled_attempt_costs_no_hash_and_no_write_and_the_lockout_is_an_event(throttled_app, monkeypatch):
    app = throttled_app
    for _ in range(6):
        login(app, "admin", "wrong", address="198.51.100.1")
    throttled = m.Event.get(m.Event.kind == "LoginThrottled")
    assert (throttled.user, throttled.client, throttled.result) == ("admin", "198.51.100.1", "Refused")
    assert "login failures for user 'admin' from 198.51.100.1" in throttled.description
    events = m.Event.select().count()
    runs = []
    real = hashlib.scrypt
    monkeypatch.setattr(m.hashlib, "scrypt", lambda *a, **k: runs.append(1) or real(*a, **k))
    for _ in range(50):
        assert login(app, "admin", "wrong", address="198.51.100.1").status_code == 429
    assert runs == [] and m.Event.select().count() == events
    assert m.Event.select().where(m.Event.kind == "LoginThrottled").count() == 1


def test_the_write_lock_is_free_while_a_password_is_checked(app, monkeypatch):
    """A login checking a password (slow on purpose) must not hold the SQLite write lock: before, the whole
    login ran in one IMMEDIATE transaction and a burst of logins starved the background loops."""
    db_path = app.extensions["zvm"].config.database.removeprefix("sqlite:///")
    checked = []
    real = hashlib.scrypt

    def scrypt_then_try_to_write(*args, **kwargs):
        other = sqlite3.connect(db_path, timeout=0)  # another writer that does not wait at all
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            checked.append("free")
        except sqlite3.OperationalError as exc:
            checked.append(str(exc))
        finally:
            other.close()
        return real(*args, **kwargs)

    monkeypatch.setattr(m.hashlib, "scrypt", scrypt_then_try_to_write)
    for user, password in (("admin", "wrong"), ("nosuchuser", "x"), ("admin", ADMIN_PASSWORD)):
        login(app, user, password)
    assert checked == ["free", "free", "free"]


@pytest.mark.parametrize("workers", [8])
def test_a_burst_of_failed_logins_never_makes_another_writer_fail(app, workers):
    """Wrong logins from many threads while another thread writes as a background loop does."""
    zvm = app.extensions["zvm"]
    errors: list[BaseException] = []
    stop = threading.Event()

    def background_writer():
        from zvm.db import transaction

        zvm.db.connect(reuse_if_open=True)
        try:
            n = 0
            while not stop.is_set() or n < 20:
                with transaction():
                    m.Event.create(kind="Probe", category="Site", description=str(n))
                n += 1
        except BaseException as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)
        finally:
            zvm.db.close()

    def attacker(i):
        for j in range(6):
            login(app, f"user{i}-{j}", "wrong", address=f"10.0.{i}.{j}")

    writer = threading.Thread(target=background_writer)
    writer.start()
    threads = [threading.Thread(target=attacker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    writer.join()
    assert errors == []
    assert m.Event.select().where(m.Event.kind == "Login").count() == workers * 6
