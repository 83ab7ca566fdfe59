"""Where webhooks may go: http(s) URLs whose host resolves only to public addresses.

Unless private networks are allowed, an address that is loopback, private, link-local
(the cloud metadata service at 169.254.169.254 among them), multicast, reserved,
unspecified or otherwise not globally routable is refused, as is an IPv6 address that
embeds one (IPv4-mapped, NAT64). The check runs when an endpoint is added
(:func:`check_url`) and again on every connection the sender opens
(``delivery/webhook_http.py``), which connects to the very address it vetted: a name
that resolves elsewhere later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from colaflow_mcp.domain.errors import InvalidArguments

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (anyio.getaddrinfo by default; tests give
# their own to play a DNS server).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
MAX_URL = 2000
# Metadata services that are not caught by the ranges below on every Python version.
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeAddress(OSError):
    """A webhook URL's host is, or resolves to, an address it may not reach."""


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The host's addresses as the system resolves them."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def refusal(address: str) -> str | None:
    """Why an address may not be reached (None: it may)."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(str(embedded))
            return None if inner is None else f"embeds {embedded}: {inner}"
    if ip in _METADATA:
        return "a cloud metadata address"
    for test, what in ((ip.is_loopback, "loopback"), (ip.is_link_local, "link-local"),
                       (ip.is_multicast, "multicast"), (ip.is_unspecified, "unspecified"),
                       (ip.is_private, "private"), (ip.is_reserved, "reserved")):
        if test:
            return f"a {what} address"
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: its host, port and the addresses it was vetted at."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def parse_url(url: object) -> tuple[str, str, int]:
    """``(url, host, port)`` of an absolute http(s) URL, or InvalidArguments."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidArguments("url is required")
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidArguments(f"url must be at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidArguments("url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArguments("url must be http:// or https://")
    if not parts.hostname:
        raise InvalidArguments("url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArguments("url must not carry credentials (user:password@); "
                               "receivers authenticate deliveries by their signature")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidArguments("url must not contain spaces or control characters")
    return url, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def vet(host: str, port: int, allow_private: bool,
              resolve: Resolver = system_resolver) -> tuple[str, ...]:
    """The host's addresses, all of them allowed; UnsafeAddress if any is not, OSError if
    the name does not resolve."""
    try:
        addresses = (host,) if _is_ip(host) else tuple(await resolve(host, port))
    except OSError as exc:
        raise OSError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    if not addresses:
        raise OSError(f"cannot resolve {host!r}: no addresses")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                raise UnsafeAddress(
                    f"{host} resolves to {address}, {why}; webhooks to private networks "
                    "need COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true")
    return addresses


async def check_url(url: object, allow_private: bool, resolve: Resolver = system_resolver
                    ) -> Target:
    """A webhook URL as it may be added: http(s), resolvable, and (unless private networks
    are allowed) reaching only public addresses; InvalidArguments otherwise."""
    text, host, port = parse_url(url)
    try:
        addresses = await vet(host, port, allow_private, resolve)
    except OSError as exc:
        raise InvalidArguments(f"url refused: {exc}") from None
    return Target(text, host, port, addresses)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


__all__ = ["Resolver", "Target", "UnsafeAddress", "check_url", "parse_url", "refusal",
           "system_resolver", "vet"]
