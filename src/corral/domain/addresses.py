"""Addresses: which names and IPs stand for this machine (pure; no I/O, no lookups)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """``host`` (a name, an IPv4 or an IPv6 address, with or without brackets) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
