"""Outages of a consumer's dependencies (database, broker): when to try again,
when to say so, and how to tell cheaply that a dependency is back.

Retries come quickly: 0.2 s doubling to at most ``MAX_RETRY_S`` (1 s), so work
resumes within about a second of the dependency's return however long it was
gone (a backoff that kept doubling to 30 s once cost 23 s after a 30 s outage).
What is retried every second is a probe (``dependency_probe``: ``SELECT 1`` on a
writable database, a Kafka ApiVersions round trip), not the batch in hand, so a
long outage costs no media fetches or classifier runs. The log says that an
outage began once, then at most every ``LOG_EVERY_S`` while it lasts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from moderation.config import Settings
from moderation.errors import TransientError

INITIAL_RETRY_S = 0.2
MAX_RETRY_S = 1.0
LOG_EVERY_S = 30.0

Probe = Callable[[str], None]  # raises while the named dependency is still down


@dataclass
class Outage:
    """One consumer's view of its dependencies being down.

    ``failed`` is called for every failed attempt (work or probe) and returns
    the pause before the next; ``back`` when a probe found the dependency
    again; ``cleared`` when real work succeeded. Failures within LOG_EVERY_S
    of a return continue the same outage, so a flapping dependency (a probe
    that passes, work that fails) logs no more than a steady one."""

    log: logging.Logger
    prefix: str  # the log line starts "<prefix>: <dependency> unavailable"
    initial_s: float = INITIAL_RETRY_S
    max_s: float = MAX_RETRY_S
    log_every_s: float = LOG_EVERY_S
    failures: int = 0  # in a row: the pause doubles with each
    since: float | None = None  # monotonic start of the outage in progress
    _logged_at: float = field(default=0.0, repr=False)
    _back_at: float | None = field(default=None, repr=False)
    _said_back: bool = field(default=False, repr=False)

    def failed(self, dependency: str, exc: BaseException) -> float:
        now = time.monotonic()
        if self.since is not None and self._back_at is not None and now - self._back_at > self.log_every_s:
            self.cleared()  # back for a while: this is a new outage
        pause = min(self.initial_s * 2**self.failures, self.max_s)
        self.failures += 1
        self._back_at = None
        if self.since is None:
            self.since = self._logged_at = now
            self._said_back = False
            self.log.warning(
                "%s: %s unavailable, retrying in %.1fs: %s",
                self.prefix,
                dependency,
                pause,
                exc,
                extra={"dependency": dependency, "attempt": self.failures},
            )
        elif now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            self.log.warning(
                "%s: %s still unavailable after %.0fs (%d attempts): %s",
                self.prefix,
                dependency,
                now - self.since,
                self.failures,
                exc,
                extra={"dependency": dependency, "attempt": self.failures},
            )
        return pause

    def back(self) -> float | None:
        """The dependency answered again. Returns the seconds since the outage
        began the first time (to log), None when that was said already."""
        now = time.monotonic()
        self._back_at = now
        if self._said_back or self.since is None:
            return None
        self._said_back = True
        return now - self.since

    def cleared(self) -> None:
        self.failures = 0
        self.since = None
        self._back_at = None


def dependency_probe(sessions: sessionmaker[Session], settings: Settings | None) -> Probe:
    """A cheap check that ``dependency`` answers again: the database takes a
    statement and is writable (a read-only replica after a failover is still
    down for a consumer), a broker answers ApiVersions (skipped without
    settings). Raises while it does not."""

    def probe(dependency: str) -> None:
        if dependency == "broker":
            if settings is None:
                return
            from moderation.events import kafka

            if not kafka.broker_reachable(settings):
                raise TransientError("no Kafka broker answers")
            return
        with sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                if session.execute(text("SHOW transaction_read_only")).scalar() == "on":
                    raise TransientError("the database is read-only")
            else:
                session.execute(text("SELECT 1"))

    return probe
