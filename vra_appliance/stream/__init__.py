"""What both ends of the replication stream share (protect VRA -> recovery VRA, port 4005).

- ``wire``: a batch of stream writes and marks, sealed (checksum, compression) and opened.
- ``aligner``: the per-filter alignment of marks into VPG-wide checkpoints (used by the sender's and the
  receiver's side).
- ``transport``: the ``Transport`` (sending) / ``Endpoint`` (receiving) seam, its messages and refusals,
  and the in-process implementation the contract tests run against.
- ``transport_grpc``: the same seam over gRPC (``GrpcTransport``, ``ReplicationServicer``); grpc.RpcError
  never leaves it.
"""
