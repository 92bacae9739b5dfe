"""VRA: the per-host replication appliance (IO filter, protect side, recovery journal, syncs)."""

__version__ = "0.1.0"
