"""``moderation worker`` with test hooks, for fault-injection tests and the soak:

    python -m tests.support.worker_main

Reads the usual settings from the environment (see moderation/config.py), plus:

- ``FAULTS_CLASSIFIER_DELAY_S``: the classifier sleeps this long per batch (a
  slow model, for backpressure tests);
- ``FAULTS_CONSUMER_CONFIG``: a JSON object of kafka-python consumer settings
  passed to ``make_consumer`` (e.g. ``{"max_poll_interval_ms": 5000}``);
- ``FAULTS_KAFKA_LOG_LEVEL``: the level of kafka-python's loggers (default
  WARNING), to see the group protocol at work.

Everything else is the real ``moderation worker`` (signals, probes, shutdown).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np


class SlowClassifier:
    """Wraps a classifier; every ``run`` sleeps ``delay_s`` first."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.name = inner.name
        self.version = inner.version

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> Any:
        return self.inner.preprocess(images_bgr)

    def run(self, tensors: Sequence[Any]) -> Any:
        time.sleep(self.delay_s)
        return self.inner.run(tensors)

    def classify(self, images_bgr: Sequence[np.ndarray]) -> Any:
        return self.run([self.preprocess(images_bgr)])


def install_hooks() -> None:
    from moderation import runtime
    from moderation.events import kafka

    delay = float(os.environ.get("FAULTS_CLASSIFIER_DELAY_S", "0") or 0)
    if delay > 0:
        build = runtime.build_classifier
        runtime.build_classifier = lambda settings: SlowClassifier(build(settings), delay)  # type: ignore[assignment]
    kafka_level = os.environ.get("FAULTS_KAFKA_LOG_LEVEL", "")
    if kafka_level:
        configure = runtime.configure_logging

        def configure_with_kafka(settings: Any) -> None:
            configure(settings)
            logging.getLogger("kafka").setLevel(kafka_level.upper())

        runtime.configure_logging = configure_with_kafka
    consumer_config = json.loads(os.environ.get("FAULTS_CONSUMER_CONFIG", "") or "{}")
    if consumer_config:
        kafka.make_consumer = partial(kafka.make_consumer, **consumer_config)  # type: ignore[assignment]


def main() -> int:
    install_hooks()
    from moderation.cli import main as cli_main

    return cli_main(["worker"])


if __name__ == "__main__":
    sys.exit(main())
