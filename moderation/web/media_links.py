"""Short-lived, per-user signed links to an item's media on the console.

The item page loads its picture or video from ``/items/<id>/media?exp=...&sig=...``.
The signature binds the user, the item and the expiry (an HMAC of the app's
SECRET_KEY), so a link copied out of the page is useless to anyone else, and
useless to its owner after ``MEDIA_LINK_SECONDS``. The media route still needs
the login session and a live right to see the item: the link narrows access,
it never grants it.

The JSON API is not behind these links: API clients fetch
``/api/v1/items/<id>/media`` with their own credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from base64 import urlsafe_b64encode

from flask import abort, current_app, g, request, url_for

from moderation.web.services import services

PURPOSE = b"moderation.media-link.v1"
MISSING = "this media link is incomplete; reload the item page"
EXPIRED = "this media link has expired; reload the item page"
FOREIGN = "this media link was issued to another user or for another item"


def signature(secret: str | bytes, user_id: int, item_id: int, expires: int) -> str:
    """The link's signature: HMAC-SHA256 over purpose, user, item and expiry."""
    key = secret.encode() if isinstance(secret, str) else secret
    message = b"%s:%d:%d:%d" % (PURPOSE, user_id, item_id, expires)
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return urlsafe_b64encode(digest).rstrip(b"=").decode()


def link_params(secret: str | bytes, user_id: int, item_id: int, seconds: int, now: float) -> dict[str, str]:
    """Query parameters of a link valid for ``seconds`` from ``now``."""
    expires = int(now) + max(1, seconds)
    return {"exp": str(expires), "sig": signature(secret, user_id, item_id, expires)}


def problem(
    secret: str | bytes, user_id: int, item_id: int, exp: str | None, sig: str | None, now: float
) -> str | None:
    """Why the link (``exp``, ``sig``) does not open this item for this user, or None."""
    if not exp or not sig or not exp.isdigit() or len(exp) > 12:
        return MISSING
    expected = signature(secret, user_id, item_id, int(exp))
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        return FOREIGN
    if int(exp) <= now:
        return EXPIRED
    return None


# -- in a request -----------------------------------------------------------------------------
def media_url(item_id: int) -> str:
    """A fresh signed media link of the current user for ``item_id``."""
    seconds = services().settings.media_link_seconds
    params = link_params(current_app.secret_key or "", g.user.id, item_id, seconds, time.time())
    return url_for("console.media", item_id=item_id, exp=params["exp"], sig=params["sig"])


def require_valid_link(item_id: int) -> None:
    """403 with the reason unless the request carries a valid link of this user for ``item_id``."""
    reason = problem(
        current_app.secret_key or "",
        g.user.id,
        item_id,
        request.args.get("exp"),
        request.args.get("sig"),
        time.time(),
    )
    if reason is not None:
        abort(403, description=reason)
