"""One evidence case as a ZIP bundle for law enforcement or a helpline (pure: bytes in, bytes out).

Everything sits in one folder, ``evidence-item-<id>/``:

- ``<sha256><ext>``: the media, byte for byte as uploaded (absent if none was stored or it was purged);
- ``manifest.json``: what was preserved (hashes, event, signals, decision, moderator);
- ``custody.json``: the chain of custody up to this export, with its verification result;
- ``README.txt``: what each file is and how to check it;
- ``SHA256SUMS``: the SHA-256 of every other file (``sha256sum -c SHA256SUMS``).
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Extensions mimetypes guesses oddly or not at all.
EXTENSIONS = {"image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4", "video/quicktime": ".mov"}

README = """\
Evidence bundle: item {item_id} (content id {content_id})
Exported {exported_at} by {exported_by} from the moderation service.

Files
  {media_line}
  manifest.json   What was preserved when the item was removed: hashes
                  (SHA-256, MD5, PDQ, vPDQ), the upload event as received,
                  the signals that routed it (bank matches, classifier
                  scores), the decision and the moderator who made it.
  custody.json    The chain of custody: every preservation, viewing, export,
                  legal hold and purge of this evidence, in order, and the
                  result of verifying the chain when this bundle was made.
  SHA256SUMS      The SHA-256 of each file above.

Checking the files
  sha256sum -c SHA256SUMS        (Linux; on macOS: shasum -a 256 -c SHA256SUMS)
  The media file's name is its own SHA-256, which is also manifest.json's
  media.sha256 and hashes.sha256 (the hash the upload was matched with).

Checking the chain of custody
  Each record's record_hash is SHA-256 over the previous record's hash
  (empty for the first) followed by the canonical JSON of
  {{"action", "actor", "at", "details", "item_id"}} (keys sorted, no spaces,
  UTF-8). Every record's prev_hash must equal the record_hash before it.
  This export itself is recorded after the last record shown here, with the
  SHA-256 of this ZIP file.

Handle this bundle as the sensitive material it is: it may contain intimate
imagery shared without consent. Store it encrypted and delete it when done.
"""


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str
    filename: str
    files: dict[str, str]  # name in the folder -> SHA-256


def media_name(sha256: str, content_type: str) -> str:
    ext = EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"
    return f"{sha256}{ext}"


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def build(
    item_id: int,
    manifest: dict[str, Any],
    custody: dict[str, Any],
    media: tuple[bytes, str] | None,
    exported_at: datetime,
    exported_by: str,
    media_note: str = "",
) -> Bundle:
    """The ZIP of one case. ``media`` is (bytes, content type) or None, with
    ``media_note`` saying why it is absent."""
    files: dict[str, bytes] = {}
    media_file = ""
    if media is not None:
        data, content_type = media
        media_file = media_name(hashlib.sha256(data).hexdigest(), content_type)
        files[media_file] = data
        media_line = f"{media_file}\n                  The media, byte for byte as uploaded ({content_type})."
    else:
        media_line = f"(no media file) {media_note}"
    files["manifest.json"] = _json(manifest)
    files["custody.json"] = _json(custody)
    files["README.txt"] = README.format(
        item_id=item_id,
        content_id=manifest.get("content_id", ""),
        exported_at=exported_at.isoformat(timespec="seconds"),
        exported_by=exported_by,
        media_line=media_line,
    ).encode()
    sums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    files["SHA256SUMS"] = "".join(f"{digest}  {name}\n" for name, digest in sums.items()).encode()

    folder = f"evidence-item-{item_id}"
    stamp = exported_at.timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, body in files.items():
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=stamp)
            info.external_attr = 0o600 << 16
            # Media is compressed already; the text files shrink well.
            info.compress_type = zipfile.ZIP_STORED if name == media_file else zipfile.ZIP_DEFLATED
            archive.writestr(info, body)
    data = buffer.getvalue()
    return Bundle(data, hashlib.sha256(data).hexdigest(), f"{folder}.zip", sums)
