"""End-to-end worker throughput: events/s through fetch (loopback HTTP), decode,
hash, match, preprocess, classify (the configured models on ONNX Runtime, in
batches), route, persist and publish.

    .venv/bin/python bench/worker_throughput.py [--events 300] [--batch-size 8]
        [--classifier open_nsfw,nsfwjs_mobilenet_v2_mid] [--admin-url URL]

Starts the embedded broker (or uses KAFKA_BOOTSTRAP_SERVERS), a fresh PostgreSQL
database (default: 127.0.0.1:5432) and one worker in this process; prints events
per second and the mean time of each stage. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry  # noqa: E402
from scratch_db import scratch_database  # noqa: E402

from moderation import runtime  # noqa: E402
from moderation.config import load_settings  # noqa: E402
from moderation.embedded import EmbeddedBroker  # noqa: E402
from moderation.events import kafka  # noqa: E402
from moderation.events.uploads import make_upload_event  # noqa: E402
from moderation.metrics import STAGES, Metrics  # noqa: E402
from tests.support.http import MediaServer  # noqa: E402
from tests.support.images import encode, synthetic_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--onnx-threads", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8, help="CLASSIFY_BATCH_SIZE")
    ap.add_argument("--classifier", default="", help="CLASSIFIER_MODEL (default: the built-in default)")
    args = ap.parse_args()

    database = ExitStack()
    url = database.enter_context(scratch_database(args.admin_url))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    server = MediaServer()
    try:
        suffix = uuid.uuid4().hex[:6]
        settings = load_settings(
            {},
            database_url=url,
            kafka_bootstrap_servers=bootstrap,
            uploads_topic=f"b-up-{suffix}",
            decisions_topic=f"b-dec-{suffix}",
            dlq_topic=f"b-dlq-{suffix}",
            consumer_group=f"b-{suffix}",
            kafka_session_timeout_ms=6000,
            onnx_threads=args.onnx_threads,
            kafka_max_poll_records=100,
            classify_batch_size=args.batch_size,
            media_allowed_hosts="127.0.0.1",  # the media server runs on loopback
            **({"classifier_model": args.classifier} if args.classifier else {}),
        )
        kafka.ensure_topics(settings)
        print(f"preparing {args.events} synthetic 640x480 JPEGs ...", flush=True)
        urls = [server.add(f"/{i}.jpg", encode(synthetic_image(i))) for i in range(args.events)]
        producer = kafka.make_producer(settings)
        for i, media_url in enumerate(urls):
            ev = make_upload_event(str(uuid.uuid4()), f"c{i}", "u", media_url, "image/jpeg")
            producer.send(settings.uploads_topic, key=f"c{i}".encode(), value=json.dumps(ev).encode())
        producer.flush()

        metrics = Metrics(CollectorRegistry())
        worker = runtime.build_worker(settings, metrics)
        thread = threading.Thread(target=worker.run, daemon=True)
        consumed = lambda: sum(  # noqa: E731
            metrics.registry.get_sample_value("moderation_events_consumed_total", {"outcome": o}) or 0
            for o in ("auto_remove", "review", "allow", "dead_letter", "duplicate")
        )
        thread.start()
        while consumed() == 0:
            time.sleep(0.01)
        started, first = time.perf_counter(), consumed()
        last_print = started
        while consumed() < args.events:
            time.sleep(0.05)
            if time.perf_counter() - last_print > 5:
                print(f"  {int(consumed())}/{args.events} events", flush=True)
                last_print = time.perf_counter()
        elapsed = time.perf_counter() - started
        worker.stop()
        thread.join(10)
        rate = (args.events - first) / elapsed
        print(
            f"\nworker throughput: {rate:.1f} events/s ({args.events - first:.0f} events in {elapsed:.1f} s, "
            f"1 worker, {os.cpu_count()} cores, onnx threads={args.onnx_threads or 'auto'}, "
            f"CLASSIFIER_MODEL={settings.classifier_model}, CLASSIFY_BATCH_SIZE={args.batch_size})"
        )
        get = metrics.registry.get_sample_value
        batches = get("moderation_classify_batch_pictures_count") or 1
        pictures = get("moderation_classify_batch_pictures_sum") or 0
        print(f"mean classifier batch: {pictures / batches:.1f} pictures")
        print(f"{'stage':<10} {'ms/event':>8}")
        for stage in STAGES:
            n = (
                metrics.registry.get_sample_value("moderation_stage_duration_seconds_count", {"stage": stage})
                or 0
            )
            s = (
                metrics.registry.get_sample_value("moderation_stage_duration_seconds_sum", {"stage": stage})
                or 0
            )
            # Per event: batched stages (classify, detect) run once per batch.
            print(f"{stage:<10} {1000 * s / args.events if n else 0:>8.2f}")
    finally:
        server.close()
        if broker:
            broker.stop()
        database.close()


if __name__ == "__main__":
    main()
