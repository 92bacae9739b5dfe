"""The recovery side's running service, over the pure core of ``vra_appliance.recover``.

- ``side``: ``RecoverySide``, the recover roles of one VRA: its file journals, a ``RecoveryVPG`` and a
  receiver per VPG, the checksum side of delta syncs, point-in-time images served over NBD, journal discard.
- ``receiver``: ``VpgReceiver`` (one VPG's streams from its protect VRAs, aligned and appended) and
  ``RecoveryEndpoint`` (routes a stream to its VPG's receiver).
- ``positions``: each stream's durable position, logged beside the journal.
- ``exports``: the volumes of a recovery session (a point-in-time image under a scratch overlay) and their
  commit into the replica.

Unlike the core, this package runs threads and speaks the stream's messages (vra_appliance.stream); it
imports no grpc (the servicers in vra_appliance.rpc translate).
"""
