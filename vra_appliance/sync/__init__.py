"""The syncs: initial (whole volume, holes and zero blocks skipped), delta (block checksums both sides) and
bitmap (the dirty map's extents), and the per-volume sync state that says whether a checkpoint is consistent.

Modules: ``volume`` (what a sync reads), ``checksums`` and ``messages`` (pure delta-sync math and its byte
encoding), ``delta``, ``initial``, ``bitmap``, ``throttle``, ``state``, ``runner``, ``grpc_peer`` (the checksum
client). Errors are the appliance's one tree (vra_appliance.errors). docs/SYNC.md has the design, the
measurements behind the block size, and how the syncs plug into replication.
"""
