#!/bin/sh
# mmdebstrap customize hook of the VRA appliance image (ovf/build.py):  customize.sh ROOT WHEELHOUSE FILES
# Installs the project's wheel and its locked dependencies into /opt/zvr (pip, hashes required, no index),
# the appliance's units and settings (FILES), and leaves nothing machine-specific in the image.
set -eu
root="$1"; wheels="$2"; files="$3"

cp -a "$files"/. "$root"/
mkdir -p "$root/tmp/wheels"
cp "$wheels"/* "$root/tmp/wheels/"
chroot "$root" python3 -m venv /opt/zvr
chroot "$root" /opt/zvr/bin/pip install -q --disable-pip-version-check --no-index --find-links /tmp/wheels \
  --require-hashes -r /tmp/wheels/product.txt
chroot "$root" sh -c '/opt/zvr/bin/pip install -q --disable-pip-version-check --no-index --no-deps /tmp/wheels/zvr-*.whl'
rm -rf "$root/tmp/wheels"
ln -sf /opt/zvr/bin/vra "$root/usr/local/bin/vra"

chroot "$root" useradd --system --home-dir /var/lib/zvr --no-create-home --shell /usr/sbin/nologin zvr
chroot "$root" systemctl enable zvr-firstboot.service zvr-vra.service nftables.service \
  systemd-networkd.service systemd-resolved.service
chroot "$root" systemctl disable ssh.service
# an appliance is updated by redeploying its OVA, never by apt on its own
chroot "$root" systemctl disable apt-daily.timer apt-daily-upgrade.timer
# no local logins (root has no password, SSH takes a key): no logind
chroot "$root" systemctl mask systemd-logind.service
rm -f "$root"/etc/ssh/ssh_host_*
ln -sf /run/zvr-appliance/issue "$root/etc/issue"
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo zvr-vra > "$root/etc/hostname"
