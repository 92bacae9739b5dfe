"""Cached GET answers: the encodings a client gets (zstd, gzip, as is; q-values honoured), and one build of
an answer however many requests ask for it at once."""

from __future__ import annotations

import gzip
import json
import threading
import time

import pytest
import zstandard

from tests.zvm.test_api import create_vpg
from zvm.api.cache import COMPRESS_FROM, ResponseCache


@pytest.fixture
def large(api):
    """An API whose GET /v1/events answer is large enough to be compressed."""
    for i in range(6):
        create_vpg(api, f"vpg-{i}", [f"vm-{i}"])
    return api


def _get(api, path: str, accept: str | None):
    headers = {"x-zerto-session": api.token}
    if accept is not None:
        headers["Accept-Encoding"] = accept
    return api.client.get(f"/v1{path}", headers=headers)


@pytest.mark.parametrize("accept,encoding", [
    (None, None),
    ("identity", None),
    ("gzip, deflate", "gzip"),  # python-requests
    ("gzip, deflate, br, zstd", "zstd"),  # browsers, curl --compressed
    ("zstd;q=0.5, gzip", "gzip"),
    ("gzip;q=0, deflate", None),  # q=0: refused, not accepted
    ("*", "gzip"),  # any: the one every client decodes
    ("zstd;q=0.8, *", "gzip"),
    ("*;q=0.5, zstd", "zstd"),
    ("*, zstd;q=0", "gzip"),
    ("*, gzip;q=0", None),
    ("br", None),
])
def test_a_large_answer_is_sent_in_the_encoding_the_client_prefers(large, accept, encoding):
    plain = _get(large, "/events", "identity")
    assert len(plain.data) >= COMPRESS_FROM and "Content-Encoding" not in plain.headers
    resp = _get(large, "/events", accept)
    assert resp.status_code == 200 and resp.headers["Vary"] == "Accept-Encoding"
    assert resp.headers.get("Content-Encoding") == encoding
    body = {None: lambda b: b, "gzip": gzip.decompress,
            "zstd": lambda b: zstandard.ZstdDecompressor().decompress(b)}[encoding](resp.data)
    assert body == plain.data and json.loads(body) == plain.json
    if encoding is not None:
        assert len(resp.data) < len(plain.data) / 4


def test_a_small_answer_is_sent_as_it_is(api):
    resp = _get(api, "/vpgs", "gzip, zstd")
    assert resp.json == [] and "Content-Encoding" not in resp.headers and "Vary" not in resp.headers


def test_each_encoding_is_computed_once_per_revision(large, monkeypatch):
    import zvm.api.cache as cache_module

    compressed = []
    real = cache_module._compress
    monkeypatch.setattr(cache_module, "_compress", lambda body, enc: compressed.append(enc) or real(body, enc))
    for _ in range(3):
        for accept in ("gzip", "zstd", "identity"):
            assert _get(large, "/events", accept).status_code == 200
    assert sorted(compressed) == ["gzip", "zstd"]
    before = _get(large, "/events", "identity").data
    large.post("/vpgSettings")  # a change (and an event): the next answers are built (and compressed) anew
    zstd = _get(large, "/events", "zstd")
    assert compressed[2:] == ["zstd"]
    after = zstandard.ZstdDecompressor().decompress(zstd.data)
    assert after == _get(large, "/events", "identity").data != before


def _wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.005)


def test_requests_that_miss_together_share_one_build():
    cache = ResponseCache()
    release = threading.Event()
    builds = []

    def build():
        builds.append(threading.current_thread().name)
        release.wait(10)
        return b'{"built": 1}'

    answers = []
    threads = [threading.Thread(target=lambda: answers.append(cache.answer("/v1/vms", 7, build)), name=f"r{i}")
               for i in range(8)]
    for t in threads:
        t.start()
    _wait_until(lambda: cache.waiting("/v1/vms") == 7, "seven requests waiting for the first one's build")
    release.set()
    for t in threads:
        t.join(10)
    assert len(builds) == 1 and len(answers) == 8 and {a.body for a in answers} == {b'{"built": 1}'}
    assert cache.shared == 7
    assert cache.answer("/v1/vms", 7, build) is answers[0]  # filed: a hit
    assert len(builds) == 1


def test_a_failed_build_fails_its_own_request_and_the_waiting_ones_build_their_own():
    cache = ResponseCache()
    release = threading.Event()
    calls = []

    def build():
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)
            raise RuntimeError("the database went away")
        return b"[]"

    errors, answers = [], []

    def first():
        try:
            cache.answer("/v1/vpgs", 3, build)
        except RuntimeError as exc:
            errors.append(exc)

    leader = threading.Thread(target=first)
    leader.start()
    _wait_until(lambda: calls, "the first build running")
    follower = threading.Thread(target=lambda: answers.append(cache.answer("/v1/vpgs", 3, build)))
    follower.start()
    _wait_until(lambda: cache.waiting("/v1/vpgs") == 1, "the second request waiting")
    release.set()
    leader.join(10)
    follower.join(10)
    assert [str(e) for e in errors] == ["the database went away"]
    assert [a.body for a in answers] == [b"[]"] and len(calls) == 2


def test_an_answer_of_a_newer_state_is_not_replaced_by_an_older_one():
    cache = ResponseCache()
    newer = cache.put("/v1/vpgs", 9, b"[9]")
    assert cache.put("/v1/vpgs", 8, b"[8]") is newer
    assert cache.answer("/v1/vpgs", 8, lambda: b"[8]") is newer  # never older than the state asked at
    assert cache.answer("/v1/vpgs", 10, lambda: b"[10]").body == b"[10]"


def test_the_cache_stays_within_its_bytes_counting_every_encoding():
    body = json.dumps([{"VmName": f"vm-{i}", "Volumes": []} for i in range(2000)]).encode()
    cache = ResponseCache(max_bytes=4 * len(body) + 100)
    first = cache.put("/a", 1, body)
    cache.put("/b", 1, body)
    cache.put("/c", 1, body)
    first.encoded("gzip")
    first.encoded("zstd")
    cache.put("/d", 1, body)  # over the bound with /a's compressed forms: the least recently used goes
    assert cache.get("/a", 1) is None and all(cache.get(k, 1) for k in ("/b", "/c", "/d"))
    assert cache._bytes == sum(a.counted for a in cache._entries.values()) <= cache.max_bytes
