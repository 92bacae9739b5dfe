"""The gRPC servicers of a VRA's port 4005 other than the replication stream: thin translations from
protobuf to the service packages and from their errors to gRPC status codes.

- ``control``: the Control service the ZVM calls (roles, checkpoints, images, trust) and the Freeze/Thaw
  other VRAs of the site call.
- ``recovery_ops``: RecoveryOps, the recovery sessions (failover test, failover, move) of the ZVM.
"""
