"""What runs inside the VRA appliance (the Debian VM of ovf/) around `vra serve`: the OVF environment
(``ovfenv``), the network, firewall and SSH set from it (``system``), the first-boot unit that enrolls with
the ZVM and hands over to `vra serve` (``firstboot``), and the console banner (``banner``). Nothing here is
imported by the daemon itself; on a machine that is not the appliance only ``ovfenv`` is of use (tests)."""
