"""Machinery shared by the manager (zvm) and the appliance (vra_appliance); imports neither of them.

- `loop`: the one background-loop base (start / stop / wake / run_once, back-off, rate-limited logging).
- `sparse`: which ranges of a sparse file hold data (SEEK_DATA / SEEK_HOLE).
"""
