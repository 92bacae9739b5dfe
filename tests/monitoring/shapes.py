"""The raw API shapes the monitoring tests read, in one place (the REST API's shape is changing: issue 15).

Every field name or enumeration value of an API answer that the tests in this directory assert goes through
here, so that a shape change is one edit."""

from __future__ import annotations

from zvm.enums import VpgStatus, VpgSubStatus


def vpg_view(api, vid: str) -> dict:
    """(status, substatus, RPO seconds, IOPS, throughput MB/s) of a VPG as GET /v1/vpgs/{id} shows it."""
    got = api.get(f"/vpgs/{vid}").json
    return {"status": VpgStatus(got["Status"]).internal, "substatus": VpgSubStatus(got["SubStatus"]).internal, "rpo": got["ActualRPO"], "iops": got["IOPs"],
            "throughput": got["ThroughputInMB"]}


def events(api, vid: str, kind: str) -> list[dict]:
    """The VPG's events of ``kind``, oldest first: {"description", "detail", "started", "completed"}."""
    got = api.get("/events", query_string={"entityIdentifier": vid, "eventType": kind}).json
    return [{"description": e["Description"], "detail": e["Detail"], "started": e["Started"],
             "completed": e["Completed"]} for e in reversed(got)]


def active_alerts(api, vid: str) -> dict[str, str]:
    """code -> description of the VPG's active alerts."""
    got = api.get("/alerts", query_string={"isActive": "true", "entityIdentifier": vid}).json
    return {a["Code"]: a["Description"] for a in got}
