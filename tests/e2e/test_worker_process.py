"""`moderation worker` as a real process: probes, metrics, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select

from moderation.embedded import free_port
from moderation.events import kafka
from moderation.events.uploads import make_upload_event
from moderation.storage.models import Item
from tests.conftest import wait_until
from tests.support.http import http_get
from tests.support.images import encode, synthetic_image
from tests.support.processes import terminate

BIN = Path(sys.executable).with_name("moderation")


def test_worker_process_serves_probes_and_stops_cleanly_on_sigterm(
    settings_factory, sessions, publish, media_server, tmp_path
):
    settings = settings_factory()
    kafka.ensure_topics(settings)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "UPLOADS_TOPIC": settings.uploads_topic,
        "DECISIONS_TOPIC": settings.decisions_topic,
        "DLQ_TOPIC": settings.dlq_topic,
        "CONSUMER_GROUP": settings.consumer_group,
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
        "MEDIA_ALLOWED_HOSTS": "127.0.0.1",  # the test's media server is on loopback
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_get(base + "/readyz")[0] == 200, timeout=60, interval=0.3)
            assert http_get(base + "/healthz")[0] == 200

            event_id = str(uuid.uuid4())
            url = media_server.add("/w.jpg", encode(synthetic_image(5)))
            event = make_upload_event(event_id, "content-w", "u", url, "image/jpeg")
            publish(settings.uploads_topic, b"content-w", json.dumps(event).encode())

            def stored() -> bool:
                with sessions() as s:
                    return s.scalar(select(Item.id).where(Item.event_id == event_id)) is not None

            wait_until(stored, timeout=60)
            status, metrics = http_get(base + "/metrics")
            assert status == 200
            assert 'moderation_stage_duration_seconds_count{stage="classify"} 1.0' in metrics
            assert 'moderation_ready{role="worker"} 1.0' in metrics
            assert "moderation_bank_index_entries 0.0" in metrics  # a worker holds an index
            ready = json.loads(http_get(base + "/readyz")[1])
            assert ready == {"ok": True, "loop_alive": True, "database": True, "broker": True}
            # Lag per assigned partition, reported every few seconds: all consumed, so 0.
            lag = f'moderation_consumer_lag_messages{{group="{settings.consumer_group}"'
            wait_until(lambda: lag in http_get(base + "/metrics")[1], timeout=20, interval=0.5)
            lines = [line for line in http_get(base + "/metrics")[1].splitlines() if line.startswith(lag)]
            assert lines and all(line.endswith(" 0.0") for line in lines), lines
            assert http_get(base + "/nope")[0] == 404
        finally:
            terminate(proc, timeout=30)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    processed = [rec for rec in lines if rec["msg"] == "event processed"]
    assert processed and processed[0]["event_id"] == event_id
    assert any(rec["msg"] == "worker stopping" for rec in lines)
