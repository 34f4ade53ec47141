"""The visitor's address: X-Forwarded-For is believed only when a trusted proxy sent it.

gunicorn puts the TCP peer in ``REMOTE_ADDR`` and does not rewrite it from
X-Forwarded-For (its ``forwarded_allow_ips`` setting only governs the scheme
headers), and the app cannot read gunicorn's settings. So the demo has its own
list, from the environment variable ``DEMO_TRUSTED_PROXIES``: addresses or
networks separated by commas (``"127.0.0.1,::1"`` by default, as gunicorn's
``forwarded_allow_ips``; ``""`` trusts no proxy; ``"*"`` trusts every peer,
only for a gunicorn that nothing but the proxy can reach).

When the peer is trusted, the X-Forwarded-For hops are walked from the right
(the hop the trusted peer saw) to the left, skipping trusted proxies; the
first untrusted address is the visitor. Anything left of it may be forged by
the visitor and is never looked at.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TRUSTED_PROXIES_ENV = "DEMO_TRUSTED_PROXIES"
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
MAX_HOPS = 32  # X-Forwarded-For entries looked at, from the right


class TrustedProxies:
    """A set of trusted proxy networks (or every peer, for ``*``)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.everyone = False
        self.networks: list[IPNetwork] = []
        for item in spec.replace(" ", ",").split(","):
            if not item:
                continue
            if item == "*":
                self.everyone = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{TRUSTED_PROXIES_ENV}: {item!r} is not an IP address or network "
                                 f"(in {spec!r})") from None

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> TrustedProxies:
        return cls(env.get(TRUSTED_PROXIES_ENV, DEFAULT_TRUSTED_PROXIES))

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return self.everyone or any(ip in net for net in self.networks)


def parse_ip(text: object) -> IPAddress | None:
    """An address from REMOTE_ADDR or an X-Forwarded-For hop (``1.2.3.4:80``, ``[::1]:80`` too)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_ip(environ: Mapping[str, Any], trusted: TrustedProxies) -> IPAddress | None:
    """The visitor's address; None when the peer is not an IP peer (a unix socket)."""
    current = parse_ip(environ.get("REMOTE_ADDR"))
    if current is None or current not in trusted:
        return current
    header = environ.get("HTTP_X_FORWARDED_FOR")
    if not isinstance(header, str) or not header.strip():
        return current
    hops = header.rsplit(",", MAX_HOPS)[-MAX_HOPS:]
    for hop in reversed(hops):
        ip = parse_ip(hop)
        if ip is None:
            # A trusted proxy appends a valid address: garbage here was not written
            # by one. Stop at the last address a trusted hop vouched for.
            return current
        current = ip
        if ip not in trusted:
            return ip
    return current  # every hop is a trusted proxy: the leftmost one
