"""The protect side of replication (source site), one VRA per host.

- ``split_listener``: ``SplitListener``, the VRA's end of the split stream (frames from the IO filters, by
  socket or shared ring, acknowledged once handled).
- ``side``: ``ProtectSide``, the split listener's handler (routes the filters' writes to their VPG, notices
  filter dirty-map gaps) and this VRA's checkpoint participant (freeze/thaw of its filters).
- ``vpg``: ``ProtectedVpg``, one VPG's stream: stream seqs and timestamps, batches, compression, the resend
  buffer, reconnect and resend, the dirty fallback, RPO.
- ``checkpoints``: the coordinator of a VPG's checkpoints across VRAs (freeze, decide, thaw).
- ``throttle``: the site's bandwidth limit shared by VPG priority, as a Transport wrapper.
- ``compression``: the adaptive zstd level. ``dirty``: extents let go when the buffer overflowed.
"""
