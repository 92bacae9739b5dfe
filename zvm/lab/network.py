"""The lab's addresses: each site gets its own loopback subnet, so every process keeps its product port.

Linux routes all of 127.0.0.0/8 to the loopback interface, so ``127.N.1.0/24`` can be the protected site's
LAN and ``127.N.2.0/24`` the recovery site's without any set-up: both ZVMs listen on 9080/9081 and every
VRA on 4005, as in the product. What one site reaches of the other goes through the WAN emulator, which
listens on the other site's *WAN face* (``127.N.11.x`` for the protected site, ``127.N.12.x`` for the
recovery site) and forwards to the same host number on that site's LAN:

    protected ZVM  127.N.1.10:9080/9081   seen from the recovery site as 127.N.11.10:9081 (WAN)
    recovery ZVM   127.N.2.10:9080/9081   seen from the protected site as 127.N.12.10:9081 (WAN)
    protected VRAs 127.N.1.21, .22, ...:4005
    recovery VRAs  127.N.2.21, ...:4005   installed (and so known to every ZVM and VRA) as 127.N.12.21, ...

``N`` is picked per lab so that two labs (a user's and a test's) never share an address.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass

ZVM_API_PORT = 9080
ZVM_PEER_PORT = 9081
VRA_PORT = 4005
ZVM_METRICS_PORT = 9464  # Prometheus, without authentication (each ZVM and VRA has an address of its own)
VRA_METRICS_PORT = 9465
SITE_NUMBER = {"protected": 1, "recovery": 2}
WAN_FACE = 10  # the WAN face of site s is 127.N.(10 + s).x


@dataclass(frozen=True)
class LabNetwork:
    net: int  # the N of 127.N.x.y

    def lan(self, site: str, host: int) -> str:
        return f"127.{self.net}.{SITE_NUMBER[site]}.{host}"

    def wan_face(self, site: str, host: int) -> str:
        return f"127.{self.net}.{WAN_FACE + SITE_NUMBER[site]}.{host}"

    def zvm(self, site: str) -> str:
        return self.lan(site, 10)

    def zvm_url(self, site: str) -> str:
        return f"http://{self.zvm(site)}:{ZVM_API_PORT}"

    def vra_listen(self, site: str, index: int) -> str:
        return self.lan(site, 21 + index)

    def vra_address(self, site: str, index: int) -> str:
        """The VRA's IP as installed through the ZVM: what every ZVM and VRA uses to reach it. The recovery
        site's VRAs receive the protected site's streams, so they are reached through the WAN."""
        if site == "recovery":
            return self.wan_face(site, 21 + index)
        return self.vra_listen(site, index)

    def listeners(self, hosts: int) -> list[tuple[str, int]]:
        """Every address and port the lab will listen on."""
        out = []
        for site in SITE_NUMBER:
            out += [(self.zvm(site), ZVM_API_PORT), (self.zvm(site), ZVM_PEER_PORT),
                    (self.zvm(site), ZVM_METRICS_PORT), (self.wan_face(site, 10), ZVM_PEER_PORT)]
            out += [(self.vra_listen(site, i), port) for i in range(hosts) for port in (VRA_PORT, VRA_METRICS_PORT)]
        out += [(self.vra_address("recovery", i), VRA_PORT) for i in range(hosts)]
        return out


def _free(address: tuple[str, int]) -> bool:
    with socket.socket() as s:
        try:
            s.bind(address)
        except OSError:
            return False
    return True


def pick_network(seed: str, hosts: int, tries: int = 60) -> LabNetwork:
    """A ``127.N`` subnet whose addresses and ports are all free, starting from one derived from ``seed``
    (the lab directory), so the same lab tends to get the same addresses."""
    first = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 150
    for i in range(tries):
        net = LabNetwork(100 + (first + i) % 150)
        if all(_free(a) for a in net.listeners(hosts)):
            return net
    raise OSError(f"no free loopback subnet 127.100-249.x.x with ports {ZVM_API_PORT}, {ZVM_PEER_PORT} and "
                  f"{VRA_PORT} free: is something listening on 0.0.0.0 on those ports? ('ss -ltnp' shows it)")
