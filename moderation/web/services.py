"""What the blueprints share: settings, database sessions, metrics, the decision publisher."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from moderation.config import Settings
from moderation.metrics import Metrics
from moderation.storage import outbox

log = logging.getLogger(__name__)


class DecisionPublisher:
    """Produces decisions from the outbox without holding up requests.

    With the sweeper thread running (``moderation web`` and ``moderation up`` start
    it), a request only wakes the sweeper, which owns the Kafka producer: a broker
    outage never blocks the console, and decisions wait in the outbox until the
    broker is back. Without a sweeper (tests, scripts) publishing is synchronous.
    """

    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], metrics: Metrics, send: Any = None
    ):
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self._send = send
        self._wake: threading.Event | None = None
        self._stop: threading.Event | None = None
        self._sweeper: threading.Thread | None = None

    def _sender(self) -> Any:
        if self._send is None:
            from moderation.events import kafka

            settings = self.settings
            producer = kafka.ProducerSlot(lambda: kafka.make_producer(settings))
            self._send = kafka.TopicSender(
                producer, settings.decisions_topic, self.metrics.publish_failed("decisions")
            )
        return self._send

    def publish_soon(self, item_ids: list[int]) -> None:
        if self._wake is not None:
            self._wake.set()
        else:
            self.publish(item_ids)

    def publish(self, item_ids: list[int] | None = None) -> int:
        try:
            return outbox.publish_pending(
                self.sessions,
                self._sender(),
                item_ids=item_ids,
                on_published=lambda _d: self.metrics.decisions_published.inc(),
            )
        except Exception as exc:  # stays in the outbox; the next sweep retries
            log.warning("decision publish deferred: %s", exc)
            return 0

    def start_sweeper(self, interval_s: float = 5.0) -> threading.Event:
        """Publish on every wake-up and every ``interval_s``; set the returned event to stop."""
        stop = threading.Event()
        wake = self._wake = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                wake.wait(interval_s)
                wake.clear()
                if not stop.is_set():
                    self.publish()

        self._stop = stop
        self._sweeper = threading.Thread(target=loop, name="outbox-sweeper", daemon=True)
        self._sweeper.start()
        return stop

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the sweeper (a sweep in progress finishes, within ``timeout_s``)
        and close the Kafka producer it made, if any. Decisions not yet
        published stay in the outbox for the next process."""
        if self._stop is not None and self._wake is not None:
            self._stop.set()
            self._wake.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout_s)
        # A ProducerSlot when this publisher made its producer (no new one made to close it)
        producer = getattr(self._send, "slot", None) or getattr(self._send, "producer", None)
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - closing must not fail a shutdown
                log.warning("could not close the decision producer: %s", exc)


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    metrics: Metrics
    publisher: DecisionPublisher


def services() -> Services:
    return current_app.extensions["moderation"]  # type: ignore[no-any-return]
