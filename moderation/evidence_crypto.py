"""Encryption of preserved evidence: AES-256-GCM under ``EVIDENCE_KEY``.

GCM is authenticated: altered ciphertext, a wrong key or ciphertext moved to
another case fails to decrypt instead of yielding different bytes. The
associated data names the item and the media's SHA-256, so the bytes of one
case cannot be passed off as another's by swapping database rows.

The key is 32 random bytes, base64 (standard or URL-safe alphabet). With no
``EVIDENCE_KEY`` one is generated on first use into ``DATA_DIR/evidence.key``
(mode 0600), which suits one machine only: replicas on other machines would
each generate their own. ``key_id`` (16 hex digits of the key's SHA-256) is
stored with every ciphertext, so a key mismatch is named as such.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from moderation.config import Settings
from moderation.errors import ConfigError, RequestError

log = logging.getLogger(__name__)

KEY_FILE = "evidence.key"
KEY_BYTES = 32
NONCE_BYTES = 12
HOW_TO_MAKE = "32 random bytes, base64-encoded (e.g. `openssl rand -base64 32`)"


class EvidenceUnreadable(RequestError):
    """Stored ciphertext that cannot be decrypted: another key, or altered data."""

    code = "evidence_unreadable"
    status = 409


@dataclass(frozen=True)
class EvidenceKey:
    secret: bytes = field(repr=False)
    key_id: str


def key_id_of(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()[:16]


def parse_key(raw: str, source: str) -> EvidenceKey:
    """``raw`` as a key; errors name ``source`` (a variable or a file), never the value."""
    text = "".join(raw.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: not base64; expected {HOW_TO_MAKE}") from None
    if len(secret) != KEY_BYTES:
        raise ConfigError(f"{source}: decodes to {len(secret)} bytes; expected {HOW_TO_MAKE}")
    return EvidenceKey(secret, key_id_of(secret))


def key_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / KEY_FILE


def check_key(settings: Settings) -> None:
    """Start-up check: a configured key, or an existing key file, must parse.
    Creates nothing (the key file is generated when evidence is first preserved)."""
    if settings.evidence_key:
        _parse_configured(settings.evidence_key)
    elif key_file(settings).exists():
        _read_key_file(key_file(settings))


def load_key(settings: Settings) -> EvidenceKey:
    """The key evidence is encrypted with: ``EVIDENCE_KEY``, else ``DATA_DIR/evidence.key``
    (generated on first use, with a warning)."""
    if settings.evidence_key:
        return _parse_configured(settings.evidence_key)
    return _file_key(str(key_file(settings).resolve()))


@functools.lru_cache(maxsize=8)
def _parse_configured(raw: str) -> EvidenceKey:
    return parse_key(raw, "EVIDENCE_KEY (or the file EVIDENCE_KEY_FILE names)")


@functools.lru_cache(maxsize=8)
def _file_key(path: str) -> EvidenceKey:
    target = Path(path)
    if not target.exists():
        _generate_key_file(target)
    return _read_key_file(target)


def _read_key_file(path: Path) -> EvidenceKey:
    try:
        raw = path.read_text(encoding="ascii")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"evidence key file {path}: cannot read it ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("evidence key file %s is readable by other users: chmod 600 it", path)
    return parse_key(raw, f"evidence key file {path} (EVIDENCE_KEY is not set)")


def _generate_key_file(path: Path) -> None:
    """Write a new key to ``path`` unless another process just did. The key is
    written to a private temporary file and linked into place, so a reader
    never sees a half-written key and two processes never both win."""
    secret = os.urandom(KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".evidence-key-")  # mode 0600
    except OSError as exc:
        raise ConfigError(f"EVIDENCE_KEY is not set and {path} cannot be created ({exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(base64.b64encode(secret).decode() + "\n")
        os.link(tmp, path)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"EVIDENCE_KEY is not set and {path} cannot be written ({exc})") from None
    finally:
        os.unlink(tmp)
    log.warning(
        "EVIDENCE_KEY is not set: generated an evidence key in %s (key id %s). Back it up: "
        "evidence cannot be read without it. Set EVIDENCE_KEY when more than one machine "
        "preserves or exports evidence.",
        path,
        key_id_of(secret),
    )


def associated_data(item_id: int, media_sha256: str) -> bytes:
    return f"moderation-evidence/1 item={item_id} sha256={media_sha256}".encode()


def encrypt(key: EvidenceKey, plaintext: bytes, item_id: int, media_sha256: str) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of ``plaintext``, bound to the item and its SHA-256."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key.secret).encrypt(nonce, plaintext, associated_data(item_id, media_sha256))


def decrypt(
    key: EvidenceKey, key_id: str, nonce: bytes, ciphertext: bytes, item_id: int, media_sha256: str
) -> bytes:
    """The original bytes; raises EvidenceUnreadable if ``key`` is not the one
    that encrypted them (``key_id``) or the data was altered or moved."""
    if key.key_id != key_id:
        raise EvidenceUnreadable(
            f"evidence of item {item_id} was encrypted with key {key_id}; the configured key is "
            f"{key.key_id} (see docs/evidence.md, 'Key rotation')"
        )
    try:
        plaintext = AESGCM(key.secret).decrypt(nonce, ciphertext, associated_data(item_id, media_sha256))
    except InvalidTag:
        raise EvidenceUnreadable(
            f"evidence of item {item_id} does not decrypt: its ciphertext or nonce was altered, "
            "or it belongs to another case"
        ) from None
    if hashlib.sha256(plaintext).hexdigest() != media_sha256:  # cannot happen with an intact tag
        raise EvidenceUnreadable(f"evidence of item {item_id} decrypts to bytes of another SHA-256")
    return plaintext
