"""Who a VRA trusts and how it proves who it is.

- ``auth``: ``Security``: the TLS credentials of port 4005 (server and channels), the trust bundle, and the
  check of a caller's certificate per service.
- ``enroll``: enrollment with the site's ZVM (key made here, CSR with a one-time token, CA pinned by
  fingerprint), and the files it leaves in the state directory.
"""
