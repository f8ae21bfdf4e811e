"""ICE host-candidate selection.

aioice gathers host candidates on every interface except loopback. A server
in a container, or a test on one machine, often needs to offer exactly one
address; :func:`restrict_host_addresses` makes aioice offer only those. It is
process-wide (aioice has no per-connection hook), so it is applied once at start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    import aioice.ice

    chosen = [str(ipaddress.ip_address(a)) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in chosen
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses
