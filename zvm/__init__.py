"""ZVM: the per-site manager of the replication product (REST API, vCenter integration, orchestration)."""

__version__ = "0.1.0"
