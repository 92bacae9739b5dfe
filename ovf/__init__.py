"""The VRA appliance: its OVF descriptor, the image build (build.py) and reusable guest-image tooling
(debian_image.py: Debian root file systems and bootable disks; qemu.py: booting them under QEMU)."""
