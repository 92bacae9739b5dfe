"""Real guests: a small Debian VM that runs a database workload (the protected VM of the tests, the lab and
the benchmarks) and checks itself after a recovery.

- ``guests.image``: builds the guest (Debian's kernel, a small initramfs, an ext4 root disk with busybox,
  sqlite3 and e2fsprogs), cached under ``.cache/guests/<hash of the inputs>/``.
- ``guests.runner``: boots it under QEMU (direct kernel boot, the disk a file or an NBD export), reads what
  the guest reports on its second serial port (commits, readiness, check results) into a log.
- ``guests/files/``: the scripts that run inside the guest (the initramfs's ``init``, the disk's
  ``/sbin/init`` with the workload and the application check).

This package imports nothing of the manager or the appliance: both may run a guest (docs/GUESTS.md).
"""
