"""What each role's ``/readyz`` answers and ``moderation_ready`` exports.

A check returns ``(ready, detail)``; the detail is the JSON body of ``/readyz``
and says which dependency is missing in words an operator can act on. It never
carries connection strings or raw driver messages (``/readyz`` needs no login):
those go to the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from moderation.config import Settings

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, dict[str, Any]]]
LOOP_STALE_AFTER_S = 120.0
DATABASE_DOWN = "the database does not answer: check DATABASE_URL and that the server is up"
BROKER_DOWN = "no Kafka broker answers: check KAFKA_BOOTSTRAP_SERVERS and that the brokers are up"


class ConsumerLoop(Protocol):
    last_loop_at: float

    @property
    def outage(self) -> str | None: ...


def database(sessions: sessionmaker[Session]) -> tuple[bool, dict[str, Any]]:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: database check failed: %s", exc)
        return False, {"database": False, "error": DATABASE_DOWN}
    return True, {"database": True}


def loop_alive(loop: ConsumerLoop) -> bool:
    return time.monotonic() - loop.last_loop_at < LOOP_STALE_AFTER_S


def consumer(loop: ConsumerLoop, sessions: sessionmaker[Session], settings: Settings) -> Check:
    """A consumer role (worker, appeals): its loop ran lately, the database
    answers, and a broker accepts connections while the loop is not paused
    for a broker outage."""
    from moderation.events import kafka

    def check() -> tuple[bool, dict[str, Any]]:
        if not loop_alive(loop):
            return False, {"loop_alive": False, "error": "the consume loop has not run for 2 minutes"}
        ok, detail = database(sessions)
        broker = loop.outage != "broker" and kafka.broker_reachable(settings)
        detail = {"loop_alive": True, **detail, "broker": broker}
        if not broker:
            detail["error"] = "; ".join(filter(None, [detail.get("error"), BROKER_DOWN]))
        return ok and broker, detail

    return check
