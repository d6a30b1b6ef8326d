"""One error hierarchy for the whole service.

- ``InvalidInput``: the event or its media can never be processed. Dead-letter it,
  commit the offset, move on. Never retried.
- ``TransientError``: a dependency is briefly unavailable (database, broker).
  Don't commit; back off and retry the same event.
- ``FatalError``: configuration or programming error. Stop the process loudly.
"""

from __future__ import annotations


class ModerationError(Exception):
    """Base class; ``code`` is a stable, machine-readable error class name."""

    code = "error"


class InvalidInput(ModerationError):
    code = "invalid_input"


class InvalidEvent(InvalidInput):
    code = "invalid_event"


class MediaFetchError(InvalidInput):
    code = "media_fetch_failed"


class MediaUrlRefused(MediaFetchError):
    """The media URL, or a redirect it led to, points where a worker must never
    connect (SSRF rules: private, loopback, metadata addresses, other schemes,
    credentials). The message says which rule and which address."""

    code = "media_url_refused"


class MediaTooLarge(InvalidInput):
    code = "media_too_large"


class MediaDecodeError(InvalidInput):
    code = "media_undecodable"


class ProcessingFailed(InvalidInput):
    """An unexpected error while processing one event (a bug, or input no check
    foresaw). Dead-lettered with the exception type so it can be replayed once
    fixed, instead of crash-looping the worker on a poison message."""

    code = "processing_failed"


class TransientError(ModerationError):
    code = "transient"


class FatalError(ModerationError):
    code = "fatal"


class ConfigError(FatalError):
    code = "config"


class RequestError(ModerationError):
    """A caller's request (CLI, console, API) cannot be carried out as asked.
    Reported to the caller with its message; nothing was changed."""

    code = "bad_request"
    status = 400


class NotFound(RequestError):
    code = "not_found"
    status = 404


class Forbidden(RequestError):
    code = "forbidden"
    status = 403


class Conflict(RequestError):
    code = "conflict"
    status = 409
