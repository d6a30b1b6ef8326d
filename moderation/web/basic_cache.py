"""Recent successful HTTP Basic checks, so that an API client does not cost a
full scrypt check (about 100 ms of CPU) on every request.

An entry is keyed by an HMAC of the source, username and password under a key
drawn at random when the process starts: the cache holds no password and no
hash that could be attacked offline, and nothing is shared between replicas.
It remembers the user id and ``session_version`` of a check that succeeded; a
hit still loads the user, and counts only while the user is active and the
version is the same, so a new password, a deactivation or a logout
invalidates it at once. An entry lives ``BASIC_AUTH_CACHE_SECONDS`` at most.
Failures are never cached: every wrong password is checked and counted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Verified:
    user_id: int
    session_version: int
    expires: float


class BasicAuthCache:
    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self._max = max_entries
        self._hmac_key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, source: str, username: str, password: str) -> bytes:
        message = b"\x00".join(p.encode("utf-8", "surrogatepass") for p in (source, username, password))
        return hmac.new(self._hmac_key, message, hashlib.sha256).digest()

    def get(self, key: bytes, now: float | None = None) -> Verified | None:
        if self.ttl_s <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found.expires <= now:
                del self._entries[key]
                return None
            return found

    def remember(self, key: bytes, user_id: int, session_version: int, now: float | None = None) -> None:
        if self.ttl_s <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self._entries[key] = Verified(user_id, session_version, now + self.ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:  # the oldest first
                self._entries.popitem(last=False)

    def forget(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
