"""iofilter package."""
