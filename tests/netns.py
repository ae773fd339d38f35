"""A network namespace joined to this one by a veth pair on a private /30, for tests that partition a process
from the others (`ip netns`, `ip link`; needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN).

The host end of the pair holds ``host_ip``, the namespace's end ``ns_ip``; a process started with ``prefix``
runs in the namespace and reaches the host only at ``host_ip``. ``cut()`` sets the namespace's end down (the
cable pulled on that machine: its packets get "network unreachable", the host's end keeps its address), and
``heal()`` sets it up again. ``close()`` deletes the namespace, which deletes the pair with it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import subprocess
import uuid


class Unavailable(Exception):
    """`ip netns` cannot be used here (no `ip`, or not permitted)."""


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(("netns", "exec", ns, "ip") if ns else ()), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


class NetNs:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"corral-t-{tag}"
        self.host_if, self.ns_if = f"crh{tag}", f"crn{tag}"  # interface names: 15 characters at most
        used = _used_networks()
        for _ in range(100):  # a /30 in 10.213.0.0/16 that no interface here is on
            net = ipaddress.ip_network(f"10.213.{random.randrange(256)}.{4 * random.randrange(64)}/30")
            if not any(net.overlaps(u) for u in used):
                break
        hosts = list(net.hosts())
        self.host_ip, self.ns_ip = str(hosts[0]), str(hosts[1])
        self.prefix = ["ip", "netns", "exec", self.name]
        self._made = False
        try:
            subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True, timeout=10,
                           check=True)
        except FileNotFoundError as e:
            raise Unavailable("the `ip` command (iproute2) is not installed") from e
        except subprocess.CalledProcessError as e:
            raise Unavailable(f"`ip netns add` is not permitted here: {e.stderr.strip()}") from e
        self._made = True
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if, ns=self.name)
            _ip("link", "set", self.ns_if, "up", ns=self.name)
            _ip("link", "set", "lo", "up", ns=self.name)
        except BaseException:
            self.close()
            raise

    def cut(self) -> None:
        _ip("link", "set", self.ns_if, "down", ns=self.name)

    def heal(self) -> None:
        _ip("link", "set", self.ns_if, "up", ns=self.name)

    def close(self) -> None:
        """Delete the namespace and the pair (either end deleted deletes both); safe to call twice."""
        if self._made:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("netns", "del", self.name)
            self._made = False
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # only if the namespace kept it
            if self.host_if in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                              timeout=10).stdout:
                _ip("link", "del", self.host_if)
