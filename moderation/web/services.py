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
    """Produces decisions from the outbox. The Kafka producer is created on first
    use, so the console starts (and decisions are stored) even while the broker is
    down; a sweep thread publishes whatever is left."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], metrics: Metrics, send: Any = None
    ):
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self._send = send
        self._lock = threading.Lock()

    def _sender(self) -> Any:
        with self._lock:
            if self._send is None:
                from moderation.events import kafka

                producer = kafka.make_producer(self.settings)
                self._send = kafka.TopicSender(producer, self.settings.decisions_topic)
            return self._send

    def publish(self, item_ids: list[int] | None = None) -> int:
        try:
            return outbox.publish_pending(
                self.sessions,
                self._sender(),
                item_ids=item_ids,
                on_published=lambda _d: self.metrics.decisions_published.inc(),
            )
        except Exception as exc:  # stays in the outbox; the sweep retries
            log.warning("decision publish deferred: %s", exc)
            return 0

    def start_sweeper(self, interval_s: float = 5.0) -> threading.Event:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                self.publish()

        threading.Thread(target=loop, name="outbox-sweeper", daemon=True).start()
        return stop


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    metrics: Metrics
    publisher: DecisionPublisher


def services() -> Services:
    return current_app.extensions["moderation"]  # type: ignore[no-any-return]
