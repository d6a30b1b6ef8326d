"""Evidence keys (configured, from a file, generated) and AES-GCM bound to one case."""

from __future__ import annotations

import base64
import hashlib
import logging
import os

import pytest

from moderation import evidence_crypto
from moderation.config import load_settings
from moderation.errors import ConfigError
from moderation.evidence_crypto import EvidenceKey, EvidenceUnreadable

SECRET = bytes(range(32))
MEDIA = b"\xff\xd8\xff\xe0 synthetic picture bytes " * 40
SHA = hashlib.sha256(MEDIA).hexdigest()


def key(secret: bytes = SECRET) -> EvidenceKey:
    return EvidenceKey(secret, evidence_crypto.key_id_of(secret))


@pytest.mark.parametrize(
    "raw",
    [
        base64.b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode().rstrip("="),
        "  " + base64.b64encode(SECRET).decode() + "\n",
    ],
)
def test_keys_in_either_base64_alphabet_are_accepted(raw):
    parsed = evidence_crypto.parse_key(raw, "EVIDENCE_KEY")
    assert parsed.secret == SECRET
    assert parsed.key_id == hashlib.sha256(SECRET).hexdigest()[:16]


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("not base64 at all!", "not base64"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        (base64.b64encode(os.urandom(64)).decode(), "decodes to 64 bytes"),
    ],
)
def test_a_bad_key_stops_start_up_naming_the_variable_not_the_value(tmp_path, raw, problem):
    settings = load_settings({"EVIDENCE_KEY": raw, "DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        evidence_crypto.check_key(settings)
    message = str(err.value)
    assert "EVIDENCE_KEY" in message and problem in message and "openssl rand -base64 32" in message
    assert raw.strip() not in message


def test_the_app_refuses_to_start_with_a_bad_key(tmp_path):
    from tests.support.web import make_app

    settings = load_settings(
        {"EVIDENCE_KEY": "c2VjcmV0", "DATABASE_URL": f"sqlite:///{tmp_path}/t.db", "SECRET_KEY": "x"}
    )
    with pytest.raises(ConfigError, match="EVIDENCE_KEY") as err:
        make_app(settings)
    assert "c2VjcmV0" not in str(err.value)


def test_the_key_may_come_from_a_file(tmp_path):
    path = tmp_path / "evidence-key"
    path.write_text(base64.b64encode(SECRET).decode() + "\n")
    settings = load_settings({"EVIDENCE_KEY_FILE": str(path), "DATA_DIR": str(tmp_path / "data")})
    assert evidence_crypto.load_key(settings).secret == SECRET
    assert not (tmp_path / "data").exists()  # a configured key generates nothing
    assert base64.b64encode(SECRET).decode() not in repr(settings)


def test_without_a_key_one_is_generated_once_into_the_data_dir(tmp_path, caplog):
    settings = load_settings({"DATA_DIR": str(tmp_path / "data")})
    evidence_crypto.check_key(settings)
    assert not (tmp_path / "data" / "evidence.key").exists()  # not at start-up: on first use
    with caplog.at_level(logging.WARNING):
        first = evidence_crypto.load_key(settings)
    path = tmp_path / "data" / "evidence.key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert evidence_crypto.parse_key(path.read_text(), "file").secret == first.secret
    assert "EVIDENCE_KEY is not set" in caplog.text and first.key_id in caplog.text
    assert base64.b64encode(first.secret).decode() not in caplog.text
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    evidence_crypto._file_key.cache_clear()  # as a restarted process
    assert evidence_crypto.load_key(settings) == first
    evidence_crypto.check_key(settings)  # the existing file parses


def test_a_corrupt_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "evidence.key").write_text("garbage")
    settings = load_settings({"DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="evidence key file .*evidence.key"):
        evidence_crypto.check_key(settings)


def test_ciphertext_hides_the_media_and_decrypts_with_the_right_key_and_case():
    k = key()
    nonce, ciphertext = evidence_crypto.encrypt(k, MEDIA, 7, SHA)
    assert len(nonce) == 12 and MEDIA not in ciphertext and MEDIA[:16] not in ciphertext
    assert evidence_crypto.decrypt(k, k.key_id, nonce, ciphertext, 7, SHA) == MEDIA
    again = evidence_crypto.encrypt(k, MEDIA, 7, SHA)
    assert again[0] != nonce and again[1] != ciphertext  # a fresh nonce every time


def test_decryption_fails_with_another_key_another_case_or_altered_bytes():
    k = key()
    nonce, ciphertext = evidence_crypto.encrypt(k, MEDIA, 7, SHA)
    other = key(os.urandom(32))
    with pytest.raises(EvidenceUnreadable, match="was encrypted with key"):
        evidence_crypto.decrypt(other, k.key_id, nonce, ciphertext, 7, SHA)
    impostor = EvidenceKey(other.secret, k.key_id)  # a wrong key that claims the right id
    with pytest.raises(EvidenceUnreadable, match="does not decrypt"):
        evidence_crypto.decrypt(impostor, k.key_id, nonce, ciphertext, 7, SHA)
    with pytest.raises(EvidenceUnreadable, match="another case"):
        evidence_crypto.decrypt(k, k.key_id, nonce, ciphertext, 8, SHA)  # moved to item 8
    with pytest.raises(EvidenceUnreadable):
        evidence_crypto.decrypt(k, k.key_id, nonce, ciphertext, 7, "0" * 64)
    flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(EvidenceUnreadable):
        evidence_crypto.decrypt(k, k.key_id, nonce, flipped, 7, SHA)
