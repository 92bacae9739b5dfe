"""The IO filter in front of each protected volume: the NBD server the VM's disk goes through, the write
split to the local VRA (`splitter` with `split_ring_path`, `split_socket_path`, `split_fold`; `split_ring`,
`split_protocol`), the dirty map of what was not split, the freeze gate of checkpoints and the control
socket. It imports nothing of protect/ or recover/."""
