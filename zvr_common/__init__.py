"""Machinery shared by the manager (zvm) and the appliance (vra_appliance); imports neither of them.

- `loop`: the one background-loop base (start / stop / wake / run_once, back-off, rate-limited logging).
"""
