"""Registers every task handler (importing a module registers its handlers with
zvm.orchestration.tasks.handler)."""

from __future__ import annotations

from zvm.orchestration import peers, recoverability, recovery, vpgs, vras  # noqa: F401 - PairSite, CreateVpg, InstallVra, Failover..., VerifyCheckpoint
