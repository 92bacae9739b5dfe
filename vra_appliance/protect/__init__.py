"""The protect side of replication (source site), one VRA per host.

- ``split_listener``: ``SplitListener``, the VRA's end of the split stream (frames from the IO filters, by
  socket or shared ring, acknowledged once handled).
- ``side``: ``ProtectSide``, the split listener's handler (routes the filters' writes to their VPG, notices
  filter dirty-map gaps) and this VRA's checkpoint participant (freeze/thaw of its filters).
- ``vpg``: ``ProtectedVpg``, one VPG's protect role: the intake (timestamps, the local aligner, the buffer
  budget and the dirty fallback), the hooks for the syncs and checkpoints, status and RPO.
- ``sender``: ``StreamSender``, that VPG's stream: stream seqs, batches, compression, the resend buffer,
  connect / reconnect with back-off, resend, acks, pause. ``settings``: ``ProtectSettings`` and the counters.
- ``checkpoints``: the coordinator of a VPG's checkpoints across VRAs (freeze, decide, thaw).
- ``throttle``: the site's bandwidth limit shared by VPG priority, as a Transport wrapper.
- ``compression``: the adaptive zstd level. ``dirty``: extents let go when the buffer overflowed.
"""
