"""The administrator's commands, thin over zvm.client (zvm/admin/session.py: connection, saved session,
output, exit codes):

    zvm login | logout
    zvm status | sites | hosts | vms | vras | vpgs | protected-vms | checkpoints VPG | tasks | alerts | events
        | recovery-reports
    zvm vpg create NAME --vm VM ... | edit VPG | delete VPG | pause VPG | resume VPG | force-sync VPG
        | tag VPG TAG
    zvm vra install --host H --datastore D --network N | uninstall VRA
    zvm pair-token | pair --host H | unpair SITE
    zvm failover-test | failover-test-stop | failover | failover-commit | failover-rollback | move
        | move-commit | move-rollback  VPG [--wait]
    zvm users list | create | set-role | disable | enable | reset-password

Every command takes ``--output json``; exit codes are in zvm/admin/session.py (EXIT_CODES).
"""

from __future__ import annotations

from zvm.admin import manage, recovery, session, show
from zvm.admin.session import print_table

__all__ = ["print_table", "register"]


def register(subparsers) -> None:
    session.register_session(subparsers)
    show.register(subparsers)
    manage.register(subparsers)
    recovery.register(subparsers)
