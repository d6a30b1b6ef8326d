"""Wiring: build a role's objects from Settings. The only place that knows how
the parts fit; entry points (CLI, consumers/) call these."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from moderation import readiness
from moderation.classify import Classifier, load_classifier
from moderation.classify.detector import load_detector
from moderation.config import Settings
from moderation.errors import ConfigError
from moderation.events import kafka
from moderation.events.outage import dependency_probe
from moderation.events.worker import Worker
from moderation.hashing.index import BankIndex
from moderation.media.fetch import MediaFetcher
from moderation.media.load import MediaLimits
from moderation.metrics import Metrics
from moderation.pipeline import Pipeline
from moderation.routing import RoutingPolicy
from moderation.storage.db import make_sessionmaker, role_engine
from moderation.storage.flood import FloodPolicy

WsgiApp = Callable[..., Any]


def routing_policy(settings: Settings) -> RoutingPolicy:
    return RoutingPolicy(
        review_threshold=settings.review_threshold,
        auto_remove_pdq_distance=settings.auto_remove_pdq_distance,
        pdq_match_distance=settings.pdq_match_distance,
        pdq_min_quality=settings.pdq_min_quality,
        vpdq_min_frames=settings.vpdq_min_frames,
    )


def build_pipeline(settings: Settings, metrics: Metrics, classifier: Classifier | None = None) -> Pipeline:
    return Pipeline(
        fetcher=MediaFetcher(
            settings.media_max_bytes,
            settings.media_connect_timeout_s,
            settings.media_read_timeout_s,
            allow_files=settings.dev_mode,
            total_timeout_s=settings.media_total_timeout_s,
            allowed_hosts=settings.media_allowed_hosts,
            allow_loopback=settings.dev_mode,
        ),
        index=BankIndex(settings.pdq_match_distance),
        classifier=classifier or build_classifier(settings),
        policy=routing_policy(settings),
        limits=media_limits(settings),
        metrics=metrics,
        variants=settings.pdq_variants,
        detector=load_detector(settings.classifier_detector, settings.onnx_threads),
    )


def build_classifier(settings: Settings) -> Classifier:
    """The configured models, one ONNX Runtime session each (created here, once)."""
    return load_classifier(
        settings.classifier_model, settings.onnx_threads, settings.classifier_combine, settings.models_dir
    )


def media_limits(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_image_pixels=settings.max_image_pixels,
        video_seconds_per_hash=settings.video_seconds_per_hash,
        video_max_seconds=settings.video_max_seconds,
        video_frame_min_quality=settings.video_frame_min_quality,
        decode_min_side=settings.decode_min_side,
    )


def flood_policy(settings: Settings) -> FloodPolicy:
    return FloodPolicy(settings.flood_max_matches, settings.flood_window_seconds)


def build_worker(settings: Settings, metrics: Metrics, classifier: Classifier | None = None) -> Worker:
    sessions = make_sessionmaker(role_engine(settings))
    producer = kafka.ProducerSlot(lambda: kafka.make_producer(settings))
    worker = Worker(
        consumer=kafka.make_consumer(settings),
        sessions=sessions,
        pipeline=build_pipeline(settings, metrics, classifier),
        send_decision=kafka.TopicSender(
            producer, settings.decisions_topic, metrics.publish_failed("decisions")
        ),
        send_dead_letter=kafka.TopicSender(
            producer, settings.dlq_topic, metrics.publish_failed("dead_letters")
        ),
        metrics=metrics,
        publish_allow=settings.publish_allow_decisions,
        bank_refresh_seconds=settings.bank_refresh_seconds,
        flood=flood_policy(settings),
        batch_size=settings.classify_batch_size,
        batch_wait_s=settings.classify_batch_wait_ms / 1000,
        settings=settings,
        probe=dependency_probe(sessions, settings),
    )
    worker.refresh_banks(force=True)
    return worker


def consumer_ops_app(check: readiness.Check, loop: readiness.ConsumerLoop, metrics: Metrics) -> WsgiApp:
    """WSGI app for a consumer role's port (worker, appeals): /metrics,
    /healthz (the loop ran in the last 2 minutes: the process alone, no
    dependency) and /readyz (``check``: loop, database, broker)."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return list(metrics_app(environ, start_response))
        if path in ("/healthz", "/readyz"):
            if path == "/healthz":
                ok = readiness.loop_alive(loop)
                detail: dict[str, Any] = {"loop_alive": ok}
            else:
                ok, detail = check()
            body = json.dumps({"ok": ok, **detail}).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
            )
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def metrics_only_app(metrics: Metrics) -> WsgiApp:
    """WSGI app for the web role's metrics port (``WEB_METRICS_PORT``): /metrics
    and nothing else. The console's own port serves /metrics only to a bearer
    of ``METRICS_TOKEN`` (web/health.py)."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO", "") == "/metrics":
            return list(metrics_app(environ, start_response))
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve_web_metrics(settings: Settings, metrics: Metrics) -> WSGIServer | None:
    """Serve ``metrics`` on ``METRICS_HOST``:``WEB_METRICS_PORT`` in a thread
    (None when the port is 0). A port that is taken stops start-up naming the setting."""
    if not settings.web_metrics_port:
        return None
    host, port = settings.metrics_host, settings.web_metrics_port
    try:
        return serve_in_thread(metrics_only_app(metrics), host, port)
    except OSError as exc:
        raise ConfigError(
            f"WEB_METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another port, or 0 for none"
        ) from None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow /readyz (a hung database) never holds up
    /healthz or a scrape behind it."""

    daemon_threads = True


def serve_in_thread(app: WsgiApp, host: str, port: int) -> WSGIServer:
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"ops-http-{port}", daemon=True).start()
    return server


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("kafka").setLevel(logging.WARNING)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """Human-readable lines with ``extra=`` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
