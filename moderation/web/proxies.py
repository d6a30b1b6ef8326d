"""Client addresses and single sign-on through a trusted reverse proxy.

The client address is ``request.remote_addr`` (an operator who wraps the app in
Werkzeug's ProxyFix gets the address it derived). Only when the TCP peer is one
of ``SSO_TRUSTED_PROXIES`` is ``X-Forwarded-For`` read: the client is the
rightmost address in it that is not itself a trusted proxy.

With ``SSO_USER_HEADER`` set, that header names the logged-in user, but only on
requests whose TCP peer is a trusted proxy; from anywhere else it is ignored and
logged (once per address per minute). The proxy must remove the header from
every client request, or any client could log in as anyone.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field

from flask import current_app, request

from moderation.config import Settings
from moderation.errors import ConfigError

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
WARN_EVERY_S = 60.0
MAX_WARNED = 10_000
MAX_SSO_USER = 100


def parse_networks(raw: str) -> tuple[Network, ...]:
    networks = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"SSO_TRUSTED_PROXIES: {part!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


@dataclass
class ProxyConfig:
    trusted: tuple[Network, ...]
    sso_header: str
    _warned: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProxyConfig:
        header = settings.sso_user_header.strip()
        trusted = parse_networks(settings.sso_trusted_proxies)
        if header and not trusted:
            log.warning("SSO_USER_HEADER is set but SSO_TRUSTED_PROXIES is empty: single sign-on is off")
        return cls(trusted=trusted, sso_header=header)

    def is_trusted(self, address: str | None) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.trusted)

    def warn_once(self, key: str, message: str, *args: object) -> None:
        """Log a warning, but at most once per ``key`` and minute."""
        now = time.monotonic()
        with self._lock:
            if now - self._warned.get(key, -WARN_EVERY_S) < WARN_EVERY_S:
                return
            if len(self._warned) >= MAX_WARNED:
                self._warned.clear()
            self._warned[key] = now
        log.warning(message, *args)


def config() -> ProxyConfig:
    return current_app.extensions["moderation.proxies"]  # type: ignore[no-any-return]


def peer_address() -> str:
    """The TCP peer: the address before ProxyFix rewrote it, if it did."""
    original = request.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR")
    return str(original or request.remote_addr or "")


def client_address() -> str:
    """The client's address, for rate limits and the audit log."""
    cfg, peer = config(), peer_address()
    if not cfg.is_trusted(peer) or request.remote_addr != peer:  # untrusted, or ProxyFix did it
        return str(_ip(request.remote_addr) or request.remote_addr or "unknown")[:64]
    hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break  # garbage: stop trusting the chain here
        if not cfg.is_trusted(str(ip)):
            return str(ip)
    return str(_ip(peer) or peer or "unknown")[:64]


def sso_username() -> str | None:
    """The username the trusted proxy vouches for, or None (no SSO, no header,
    or a header from an untrusted address, which is ignored)."""
    cfg = config()
    if not cfg.sso_header:
        return None
    value = request.headers.get(cfg.sso_header)
    if value is None:
        return None
    peer = peer_address()
    if not cfg.is_trusted(peer):
        cfg.warn_once(
            f"peer:{peer}", "ignored the %s header from %s: not in SSO_TRUSTED_PROXIES", cfg.sso_header, peer
        )
        return None
    value = value.strip()
    if not value or len(value) > MAX_SSO_USER or not value.isprintable():
        return None
    return value
