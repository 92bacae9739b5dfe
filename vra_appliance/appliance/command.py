"""`vra appliance ...`: the commands the appliance's systemd units run (see vra_appliance.appliance)."""

from __future__ import annotations

from vra_appliance.appliance import firstboot


def register(subparsers) -> None:
    p = subparsers.add_parser("appliance", help="commands of the VRA appliance VM (its systemd units run them)")
    sub = p.add_subparsers(dest="appliance_command", metavar="COMMAND", required=True)
    firstboot.register(sub)
