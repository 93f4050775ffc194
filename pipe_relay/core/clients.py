# Who a client is: its address, or behind a trusted proxy the right-most untrusted X-Forwarded-For hop.
# Invariant: a forwarded address is believed only from a trusted proxy's connection, never from anyone else.
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Sequence[str]) -> tuple[Network, ...]:
    """`--trusted-proxies` CIDRs (a bare address is a /32 or /128). Raises ValueError."""
    return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs if spec.strip())


def is_trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address a client's limits are counted under.

    From a trusted proxy, the right-most X-Forwarded-For hop that is not itself a trusted proxy
    (what our own proxies appended; anything left of it may be forged by the client). If every
    hop is trusted, the left-most one; with no usable header, the proxy itself."""
    if not trusted or not forwarded_for or not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop[:64]
    return hops[0][:64] if hops else peer
