"""What a hash-exchange client gives the sync loop, and how its HTTP failures
map onto the service's error hierarchy (moderation/errors.py).

Error contract for every exchange call:

- network failure, timeout, HTTP 408/429/5xx, or a success response that is
  not the expected JSON/XML -> ``TransientError``: nothing was applied, retry
  later from the same checkpoint;
- HTTP 401/403 -> ``ConfigError`` naming the settings to fix (credentials);
- HTTP 404 -> ``ConfigError`` naming the URL setting;
- any other 4xx -> ``client_error`` (``FatalError`` while fetching: an API change
  or a bug; ``ExchangeRejected`` for one feedback item: don't resend it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import requests
from requests.adapters import HTTPAdapter
from threatexchange.exchanges.clients.utils.common import TimeoutHTTPAdapter
from urllib3.util.retry import Retry

from moderation.domain import EntrySpec
from moderation.errors import ConfigError, FatalError, InvalidInput, ModerationError, TransientError


class ExchangeRejected(InvalidInput):
    """The exchange refused one request for good (e.g. feedback on a hash it
    doesn't know). Record it and move on; resending won't help."""

    code = "exchange_rejected"


@dataclass(frozen=True)
class Batch:
    """One page of exchange updates, applied atomically with its checkpoint.

    ``upserts`` and ``withdrawn`` never name the same ``source_ref``, so the
    order in which a store applies them doesn't matter. ``checkpoint`` (JSON
    text, opaque to the store) is where the next fetch resumes once this batch
    and every earlier one are stored. ``skipped``: malformed records dropped
    (each logged). ``ignored``: well-formed records this service doesn't bank
    (other signal types, filtered members)."""

    upserts: tuple[EntrySpec, ...]
    withdrawn: tuple[str, ...]
    checkpoint: str
    skipped: int = 0
    ignored: int = 0


class ExchangeClient(Protocol):
    """A source of incremental bank updates."""

    @property
    def name(self) -> str:
        """Stable key for the checkpoint and feedback rows ("stopncii", "ncmec")."""
        ...

    def fetch_updates(self, checkpoint: str | None) -> Iterator[Batch]:
        """Batches from ``checkpoint`` (None: from the beginning) until caught up.
        Lazy: errors (see the module docstring) surface while iterating, after
        the batches already yielded, which stay valid."""
        ...


class FeedbackClient(ExchangeClient, Protocol):
    def send_feedback(self, source_ref: str, blocked: bool, *, tags: Collection[str] = ()) -> None:
        """Tell the exchange whether content matching ``source_ref`` was found to
        belong in the list (``blocked``) or not. Raises ``ExchangeRejected`` for a
        per-item refusal; other errors as in the module docstring."""
        ...


def http_adapter(timeout_s: float, retries: int, backoff_s: float) -> HTTPAdapter:
    """Connection settings for an exchange session: a timeout per request, and
    ``retries`` quick retries of idempotent GETs on 429/5xx (never of POST/PUT).
    Longer outages are the caller's to retry: the checkpoint makes that safe."""
    retry = Retry(
        total=retries,
        status_forcelist=[429, 500, 502, 503, 504],
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff_s,
        raise_on_status=False,  # hand back the last response so errors name its status
    )
    return TimeoutHTTPAdapter(timeout=timeout_s, max_retries=retry)


@contextmanager
def translate_http_errors(
    what: str,
    *,
    credentials: str,
    url_setting: str,
    client_error: type[ModerationError] = FatalError,
) -> Iterator[None]:
    """Run an exchange call, raising the service's errors for HTTP failures
    (module docstring). ``what`` names the call in messages ("StopNCII
    FetchHashes"); ``credentials`` and ``url_setting`` name the settings an
    operator would fix. Messages never contain credentials."""
    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise ConfigError(f"{what}: credentials rejected (HTTP {status}); check {credentials}") from None
        if status == 404:
            raise ConfigError(f"{what}: not found (HTTP 404); check {url_setting}") from None
        if status in (408, 429) or status >= 500:
            raise TransientError(f"{what}: HTTP {status}, retry later") from exc
        raise client_error(f"{what}: HTTP {status}: {_body_excerpt(exc.response)}") from exc
    except requests.exceptions.InvalidJSONError as exc:
        raise TransientError(f"{what}: the response was not JSON ({exc})") from exc
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        raise ConfigError(f"{what}: invalid URL ({exc}); check {url_setting}") from None
    except requests.RequestException as exc:
        # Connection refused/reset, DNS, timeouts, retries given up, broken bodies.
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc


@contextmanager
def readable_checkpoint(text: str, exchange: str) -> Iterator[None]:
    """Turns a malformed stored checkpoint into a FatalError that says how to recover."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as exc:
        raise FatalError(
            f"stored {exchange} checkpoint is unreadable ({exc}): {text[:200]!r}; reset it to resync"
        ) from None


def _body_excerpt(response: requests.Response | None) -> str:
    if response is None:
        return ""
    return " ".join(response.text[:200].split())
