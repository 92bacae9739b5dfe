"""One round of questions to the VRAs and to the recovery sites, asked in parallel with short timeouts, so that
one silent VRA (or a paired site behind a cut link) delays a monitoring pass by its timeout at most, never by
the sum of them.

``probe(...)`` returns every local VRA's Status (None when it did not answer) and, for each VPG that this site
protects and another site recovers, what that site's ZVM says of its recover role (``zvm.peer`` vpg_status).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from zvm import models as m
from zvm.errors import ZvmError
from zvm.peer.messages import checkpoints_from_json
from zvm.placement import peer_client, vra_ref

VRA_TIMEOUT_S = 3.0
PEER_TIMEOUT_S = 5.0


@dataclass
class Remote:
    """What a paired recovery site said of a VPG's recover role (``recover`` None: no answer, see ``why``)."""

    recover: dict | None
    checkpoints: list | None
    why: str = ""


@dataclass
class Round:
    vras: dict[str, dict | None] = field(default_factory=dict)  # VRA identifier -> Status, None: no answer
    remote: dict[str, Remote] = field(default_factory=dict)  # VPG identifier -> its recovery site's answer


def _status(control, vra: m.Vra) -> dict | None:
    if not vra.control_address:
        return None
    try:
        return control.status(vra_ref(vra), timeout=VRA_TIMEOUT_S)
    except ZvmError:
        return None


def _ask(client, vpg_id: str) -> Remote:
    try:
        reply = client.vpg_status(vpg_id)
    except ZvmError as exc:
        return Remote(None, None, f"the recovery site's ZVM does not answer ({str(exc)[:120]})")
    if reply.get("Recover") is None:
        return Remote(None, None, "the recovery site's VRA does not answer (says its ZVM)")
    return Remote(reply["Recover"], checkpoints_from_json(reply.get("Checkpoints")))


def probe(pool: ThreadPoolExecutor, zvm, control, vras: list[m.Vra], remote_vpgs: list[m.Vpg]) -> Round:
    out = Round()
    vra_futures = {vra.identifier: pool.submit(_status, control, vra) for vra in vras} if control else {}
    remote_futures = {}
    for vpg in remote_vpgs:
        try:
            client = peer_client(zvm, vpg.recovery_site, timeout=PEER_TIMEOUT_S)  # the database: this thread's
        except ZvmError as exc:
            out.remote[vpg.identifier] = Remote(None, None, f"the recovery site is not paired ({str(exc)[:120]})")
            continue
        remote_futures[vpg.identifier] = pool.submit(_ask, client, vpg.identifier)
    for vra_id, fut in vra_futures.items():
        out.vras[vra_id] = fut.result()
    for vpg_id, fut in remote_futures.items():
        out.remote[vpg_id] = fut.result()
    return out
