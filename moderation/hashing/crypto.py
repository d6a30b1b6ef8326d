"""Cryptographic hashes of the media bytes: exact-copy signals."""

from __future__ import annotations

import hashlib


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    # MD5 is kept only because hash-sharing programmes still exchange it.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
