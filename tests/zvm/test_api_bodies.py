"""Request bodies: no body, a body that is not JSON, and what each one changes (nothing, when refused).

Found by the fuzz (tests/zvm/test_fuzz.py, POST /v1/vpgSettings negative, seed 46 when not derandomized): a
body of whitespace alone (``-d $'\\r'``) with ``Content-Type: application/json`` was taken for no body, and
created a draft.
"""

from __future__ import annotations

import pytest

from tests.zvm.fakes import db_snapshot
from zvm import models as m


def _post(api, path: str, data: bytes, content_type: str | None = "application/json"):
    headers = {"x-zerto-session": api.token}
    if content_type:
        headers["Content-Type"] = content_type
    return api.client.post(f"/v1{path}", data=data, headers=headers)


@pytest.mark.parametrize("data", [b"\r", b" ", b"\n", b" \t\r\n "])
def test_a_body_of_whitespace_is_refused_as_json_that_is_not_valid(api, data):
    before = db_snapshot()
    resp = _post(api, "/vpgSettings", data)
    assert resp.status_code == 400, resp.json
    assert (resp.json["Code"], resp.json["Field"]) == ("InvalidRequest", "body")
    assert "not valid JSON" in resp.json["Message"]
    assert db_snapshot() == before and m.VpgSettings.select().count() == 0


def test_a_body_of_whitespace_without_a_json_content_type_is_refused_as_not_json(api):
    before = db_snapshot()
    resp = _post(api, "/vpgSettings", b"\r\n", content_type="text/plain")
    assert resp.status_code == 415 and resp.json["Code"] == "UnsupportedMediaType"
    assert db_snapshot() == before


@pytest.mark.parametrize("content_type", ["application/json", None])
def test_an_empty_body_is_no_body(api, content_type):
    resp = _post(api, "/vpgSettings", b"", content_type=content_type)
    assert resp.status_code == 200, resp.json
    assert m.VpgSettings.get().identifier == resp.json


def test_a_required_body_of_whitespace_is_refused_and_the_draft_kept(api):
    draft = api.post("/vpgSettings").json
    before = db_snapshot()
    headers = {"x-zerto-session": api.token, "Content-Type": "application/json"}
    resp = api.client.put(f"/v1/vpgSettings/{draft}/basic", data=b" \n", headers=headers)
    assert resp.status_code == 400 and resp.json["Field"] == "body"
    assert db_snapshot() == before
    resp = api.client.put(f"/v1/vpgSettings/{draft}/basic", data=b"", headers=headers)
    assert resp.status_code == 400 and resp.json["Message"].startswith("this call needs a JSON body")


def test_a_malformed_body_or_query_of_a_write_is_audited_as_refused(api):
    draft = api.post("/vpgSettings").json
    headers = {"x-zerto-session": api.token, "Content-Type": "application/json"}
    events = m.Event.select().count()
    resp = api.client.put(f"/v1/vpgSettings/{draft}/basic", data=b"{not json", headers=headers)
    assert resp.status_code == 400
    resp = api.client.put(f"/v1/vpgSettings/{draft}/basic?stauts=1", data=b"{}", headers=headers)
    assert resp.status_code == 400 and resp.json["Field"] == "stauts"
    refused = list(m.Event.select().where(m.Event.id > 0).order_by(m.Event.id))[events:]
    assert [e.result for e in refused] == ["Refused", "Refused"]
    assert all(e.entity_id == draft and e.user for e in refused)
    assert "InvalidRequest" in refused[0].detail and "not valid JSON" in refused[0].detail
    assert "unknown query parameter 'stauts'" in refused[1].detail
