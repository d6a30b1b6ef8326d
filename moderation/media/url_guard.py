"""Where a worker may fetch media from (the SSRF rules).

Media URLs come from users, so a URL must never make a worker reach into its own
network: loopback, private (RFC 1918, fc00::/7), link-local, carrier-grade NAT,
unspecified, multicast, broadcast, reserved and other non-public addresses are
refused, as are IPv4-mapped, NAT64 and 6to4 IPv6 forms of them and the cloud
metadata services, whatever their spelling (``2130706433``, ``0177.0.0.1``,
``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]`` are all parsed to an address and
checked as one). A hostname is checked by every address it resolves to; the
caller connects only to the addresses returned here (no second lookup, so DNS
rebinding cannot swap in another address). Only http and https are accepted,
and never with credentials in the URL.

Exceptions: ``MEDIA_ALLOWED_HOSTS`` names hosts (allowed whatever they resolve
to), IPs and CIDR networks (those addresses allowed) that may be private or
loopback, and dev mode allows loopback. Cloud metadata addresses and names stay
refused whatever is allowed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from moderation.errors import ConfigError, MediaFetchError, MediaUrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# AWS/GCP/Azure/OCI/Alibaba instance metadata, AWS ECS/EKS credentials, Azure's WireServer.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "168.63.129.16",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "fd20:ce::254",
    )
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
# Spellings inet_aton reads as IPv4 (decimal, octal, hex, 1-4 parts) are checked as addresses.
# A host whose last label is a number is no DNS name (no TLD is numeric); never sent to DNS.
_NUMERIC_HOST = re.compile(r"(.*\.)?(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_HOSTNAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def why_refused(ip: IPAddress) -> str | None:
    """Why no media may be fetched from ``ip`` (ignoring any allow-list), or None."""
    ip = _unzoned(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner = why_refused(embedded)
        return f"an IPv6 form of {embedded}, {inner}" if inner else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if any(ip in net for net in _PRIVATE):
        return "a private address"
    if ip in _SHARED:
        return "a carrier-grade NAT (shared) address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == _BROADCAST:
        return "a broadcast address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a special-purpose, non-public address"
    return None


def _unzoned(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 (64:ff9b::/96) address reaches."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_metadata(ip: IPAddress) -> bool:
    return _unzoned(ip) in METADATA_ADDRESSES or _embedded_ipv4(_unzoned(ip)) in METADATA_ADDRESSES


def _unmapped(ip: IPAddress) -> IPAddress:
    ip = _unzoned(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class Target:
    """One http(s) URL taken apart: where to connect and what to ask for."""

    scheme: str
    host: str  # for Host, SNI and certificate checks: lower case, IDNA; an IP in canonical form
    port: int
    request_target: str  # path and query, percent-encoded
    literal: IPAddress | None  # the address, when the URL names one instead of a hostname
    spelled: str  # the host as the URL spelled it, for messages

    @property
    def origin(self) -> str:
        """scheme://host:port, for messages (no path or query: they may carry tokens)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Address:
    """A checked address and the socket address to connect to."""

    ip: IPAddress
    family: int
    sockaddr: tuple[Any, ...]


def parse_media_url(url: str) -> Target:
    """Raises MediaUrlRefused for anything but a credential-free http(s) URL with a host."""
    if _UNSAFE_CHARS.search(url):
        raise MediaUrlRefused("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in {"http", "https"}:
            raise MediaUrlRefused(
                f"scheme {scheme!r} is not allowed; use http or https"
                if scheme
                else "the URL has no scheme; use http or https"
            )
        if "@" in parts.netloc:
            raise MediaUrlRefused("URLs with credentials (user:password@) are not accepted")
        port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
        spelled = (parts.hostname or "").rstrip(".")
    except ValueError as exc:
        raise MediaUrlRefused(f"malformed URL ({exc})") from None
    if not spelled:
        raise MediaUrlRefused("the URL has no host")
    literal = _literal_address(spelled)
    if literal is None:  # IDNA maps e.g. full-width digits to ASCII ones: check again
        literal = _literal_address(_normalise_name(spelled))
    host = str(_unzoned(literal)) if literal is not None else _normalise_name(spelled)
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return Target(scheme, host, port, path + (f"?{query}" if query else ""), literal, spelled)


def _literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling the resolver would accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise MediaUrlRefused(f"host {host!r} is neither an IP address nor a hostname") from None
    return None


def _normalise_name(host: str) -> str:
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise MediaUrlRefused(f"host {host!r} is not a valid hostname") from None
    if not _HOSTNAME.fullmatch(name):
        raise MediaUrlRefused(f"host {host!r} is not a valid hostname")
    return name


class MediaUrlPolicy:
    """The address rules plus this deployment's exceptions."""

    def __init__(self, allowed_hosts: str = "", allow_loopback: bool = False) -> None:
        """``allowed_hosts``: MEDIA_ALLOWED_HOSTS, comma-separated hostnames, IPs or CIDR
        networks. ``allow_loopback``: dev mode. Raises ConfigError for a bad entry."""
        names: set[str] = set()
        networks: list[Network] = []
        for entry in (e.strip() for e in allowed_hosts.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            try:
                names.add(_normalise_name(entry.rstrip(".")))
            except MediaUrlRefused:
                raise ConfigError(
                    f"MEDIA_ALLOWED_HOSTS: {entry!r} is not a hostname, IP address or CIDR network"
                ) from None
        self.allowed_names = frozenset(names)
        self.allowed_networks = tuple(networks)
        self.allow_loopback = allow_loopback

    def why_refused(self, ip: IPAddress, host_allowed: bool = False) -> str | None:
        """Why ``ip`` is refused under this policy, or None when media may come from it.
        Metadata addresses are refused even when allow-listed."""
        reason = why_refused(ip)
        if reason is None or _is_metadata(ip):
            return reason
        plain = _unmapped(ip)
        if host_allowed or any(plain in net or _unzoned(ip) in net for net in self.allowed_networks):
            return None
        if self.allow_loopback and plain.is_loopback:
            return None
        return reason

    def resolve(self, target: Target) -> list[Address]:
        """Every address ``target`` resolves to, each checked: raises MediaUrlRefused
        if any is refused, MediaFetchError if the name does not resolve. Connect only
        to these (a second lookup could answer differently: DNS rebinding)."""
        if target.literal is not None:
            return [self._literal(target, target.literal)]
        if target.host in METADATA_NAMES:
            raise MediaUrlRefused(f"{target.host} is a cloud metadata service")
        host_allowed = target.host in self.allowed_names
        addresses = _lookup(target)
        for address in addresses:
            reason = self.why_refused(address.ip, host_allowed)
            if reason:
                raise MediaUrlRefused(f"{target.host} resolves to {address.ip}, {reason}")
        return addresses

    def _literal(self, target: Target, ip: IPAddress) -> Address:
        reason = self.why_refused(ip)
        if reason:
            spelled = target.spelled
            raise MediaUrlRefused(
                f"{ip} is {reason}" if spelled == str(ip) else f"{spelled} is {ip}, {reason}"
            )
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:
                raise MediaUrlRefused(f"{target.spelled}: IPv6 zone ids are not supported")
            return Address(ip, socket.AF_INET6, (str(ip), target.port, 0, 0))
        return Address(ip, socket.AF_INET, (str(ip), target.port))


def _lookup(target: Target) -> list[Address]:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaFetchError(f"media URL host {target.host} does not resolve ({exc})") from None
    found: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = Address(ipaddress.ip_address(str(sockaddr[0])), family, tuple(sockaddr))
        if address not in found:
            found.append(address)
    if not found:
        raise MediaFetchError(f"media URL host {target.host} does not resolve to an IP address")
    return found
