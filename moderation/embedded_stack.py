"""``moderation up``: the whole service on one machine.

With no ``KAFKA_BOOTSTRAP_SERVERS`` the embedded broker is started on loopback;
with no ``DATABASE_URL`` a SQLite file under ``./var/`` is used. Migrations run,
an admin is created on first start (password printed once), then a worker and
the appeals consumer run in threads and the console is served in the foreground.
Dev mode is on, so ``moderation publish`` can send events that point at local
files.

The broker listens on 127.0.0.1:19092 unless another program listens there
(then on a free port, and the output says so); its address is written to
``DATA_DIR/embedded.json`` for ``moderation publish``. Ctrl-C (SIGINT) or
SIGTERM stops every part in order, the broker last, and prints one line.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from moderation.config import Settings
from moderation.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from moderation.embedded import EmbeddedBroker
    from moderation.events.appeals import AppealConsumer
    from moderation.events.worker import Worker
    from moderation.web.services import DecisionPublisher

log = logging.getLogger("moderation")
STATE_FILE = "embedded.json"
PREFERRED_BROKER_PORT = 19092
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CONSUMER_STOP_S = 15.0  # for a consumer to finish the batch in hand and leave its group
SWEEPER_STOP_S = 5.0
PRODUCER_CLOSE_S = 2.0
# Our clients are closed by then; tansu would wait 5 s more for a connection kafka-python
# left open or a JoinGroup it still holds, and its storage is in memory anyway.
BROKER_STOP_S = 2.0


def discover_bootstrap(settings: Settings) -> str:
    """The running ``moderation up``'s broker address, for ``moderation publish``."""
    path = Path(settings.data_dir) / STATE_FILE
    try:
        return str(json.loads(path.read_text())["kafka_bootstrap_servers"])
    except (OSError, ValueError, KeyError):
        raise ConfigError(
            f"KAFKA_BOOTSTRAP_SERVERS is not set and no running `moderation up` was found ({path})"
        ) from None


def _secret_key(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _ensure_admin(settings: Settings) -> None:
    from moderation.storage.db import make_engine, make_sessionmaker
    from moderation.storage.models import User
    from moderation.storage.users import create_user, generate_password

    with make_sessionmaker(make_engine(settings.database_url))() as session:
        if session.scalar(select(func.count()).select_from(User)):
            print("users exist; log in with yours (add more with `moderation user create NAME`)")
            return
        password = generate_password()
        create_user(session, "admin", password, "admin")
        session.commit()
    print(f"created console user 'admin' with password: {password}   (shown once; keep it)")


def choose_broker_port(preferred: int = PREFERRED_BROKER_PORT) -> tuple[int, str]:
    """The embedded broker's port, and the line that tells where it is: the
    preferred port (stable across restarts) unless another program listens
    there, then any free one."""
    from moderation.embedded import free_port, port_free

    if port_free(preferred):
        return preferred, f"embedded Kafka-protocol broker on 127.0.0.1:{preferred} (in memory)"
    port = free_port()
    return port, f"port {preferred} is in use; embedded broker on 127.0.0.1:{port} (in memory)"


def _start_broker(data_dir: Path) -> tuple[EmbeddedBroker, str]:
    from moderation.embedded import EmbeddedBroker, free_port, port_free

    port, line = choose_broker_port()
    log_path = data_dir / "broker.log"
    try:
        return EmbeddedBroker(port, log_path=log_path).start(), line
    except FatalError:
        if port != PREFERRED_BROKER_PORT or port_free(port):
            raise
    # Another program took the preferred port between the probe and tansu's bind.
    port = free_port()
    line = f"port {PREFERRED_BROKER_PORT} is in use; embedded broker on 127.0.0.1:{port} (in memory)"
    return EmbeddedBroker(port, log_path=log_path).start(), line


def run_stack(settings: Settings, port: int | None = None) -> int:
    """Run everything until SIGINT (Ctrl-C) or SIGTERM, then stop every part
    (``_Stack.stop``) and print one line saying so; returns the exit code."""
    from waitress.server import create_server

    from moderation import readiness, runtime
    from moderation.embedded import port_free
    from moderation.events import kafka
    from moderation.events.appeals import build_appeal_consumer
    from moderation.metrics import Metrics
    from moderation.storage.db import upgrade
    from moderation.web import create_app

    web_port = port or settings.web_port
    if not port_free(web_port, settings.web_host):
        raise ConfigError(f"port {web_port} is in use: choose another with --port or WEB_PORT")
    if settings.web_metrics_port and not port_free(settings.web_metrics_port, settings.metrics_host):
        raise ConfigError(
            f"port {settings.web_metrics_port} is in use: choose another with WEB_METRICS_PORT (0: none)"
        )
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_overrides(
        dev_mode=True,
        secret_key=settings.secret_key or _secret_key(data_dir),
    )
    runtime.configure_logging(settings)
    stack = _Stack()
    state_path = data_dir / STATE_FILE
    # Both signals stop everything in order, even where the shell that started
    # us ignores SIGINT (a background job): as `moderation worker` does.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS} if main else {}
    try:
        try:
            if not settings.kafka_bootstrap_servers:
                stack.broker, line = _start_broker(data_dir)
                settings = settings.with_overrides(kafka_bootstrap_servers=stack.broker.bootstrap)
                print(line)
            state_path.write_text(json.dumps({"kafka_bootstrap_servers": settings.kafka_bootstrap_servers}))
            stack.state_path = state_path
            kafka.ensure_topics(settings)
            upgrade(settings.database_url)
            print(f"database: {settings.database_url}")
            _ensure_admin(settings)
            metrics = Metrics()
            stack.worker = runtime.build_worker(settings, metrics)
            metrics.readiness.add("worker", readiness.consumer(stack.worker, stack.worker.sessions, settings))
            stack.worker_thread = _start_thread(stack.worker.run, "worker")
            stack.appeals = build_appeal_consumer(settings, metrics)
            metrics.readiness.add(
                "appeals", readiness.consumer(stack.appeals, stack.appeals.sessions, settings)
            )
            stack.appeals_thread = _start_thread(stack.appeals.run, "appeals")
            app = create_app(settings, metrics=metrics)
            # Every part's metrics, on the metrics port as for `moderation web`:
            # the console's port has none (unless METRICS_TOKEN is set).
            stack.metrics_server = runtime.serve_web_metrics(settings, metrics)
            stack.publisher = app.extensions["moderation"].publisher
            stack.publisher.start_sweeper()
            stack.server = create_server(
                app, host=settings.web_host, port=web_port, threads=8, ident="moderation"
            )
            print(f"review console: http://{settings.web_host}:{web_port}/")
            if stack.metrics_server is not None:
                print(f"metrics: http://{settings.metrics_host}:{settings.web_metrics_port}/metrics")
            print("publish test uploads with: moderation publish path/to/image.jpg", flush=True)
            stack.server.print_listen("Serving on http://{}:{}")
            stack.server.run()  # until SIGINT or SIGTERM: waitress catches the KeyboardInterrupt
        except KeyboardInterrupt:
            pass  # a signal during start-up: stop what was started
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the shutdown short (it is bounded)
            signal.signal(sig, signal.SIG_IGN)
        try:
            stopped = stack.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print(f"moderation up: stopped ({', '.join(stopped)})", flush=True)
    return 0


class _Stack:
    """What ``run_stack`` started, and how to stop it in order: the console
    first (no new decisions), then the outbox sweeper, then the worker and the
    appeals consumer (each asked to stop, joined with a bounded wait, then
    closed: it leaves its group), then every producer, then the broker last, so
    no client is left talking to a broker that went away. kafka-python's
    logging is silenced meanwhile: clients that are closing, or that were left
    behind, only report the connections going away."""

    def __init__(self) -> None:
        self.broker: EmbeddedBroker | None = None
        self.state_path: Path | None = None
        self.worker: Worker | None = None
        self.worker_thread: threading.Thread | None = None
        self.appeals: AppealConsumer | None = None
        self.appeals_thread: threading.Thread | None = None
        self.publisher: DecisionPublisher | None = None
        self.server: Any = None
        self.metrics_server: Any = None

    def stop(self) -> list[str]:
        """Stop what runs; returns the names of the parts stopped, for the last line."""
        kafka_log = logging.getLogger("kafka")
        level = kafka_log.level
        kafka_log.setLevel(logging.CRITICAL + 1)
        try:
            stopped: list[str] = []
            if self.server is not None:
                _close_server(self.server)
            if self.metrics_server is not None:  # with the console: one part
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            self._stop_sweeper()
            stoppers = [
                _start_thread(_stop_consumer, f"stop-{name}", (name, part, thread))
                for name, part, thread in (
                    ("worker", self.worker, self.worker_thread),
                    ("appeals consumer", self.appeals, self.appeals_thread),
                )
                if part is not None and thread is not None
            ]
            deadline = time.monotonic() + CONSUMER_STOP_S + 5
            for stopper in stoppers:
                stopper.join(max(0.0, deadline - time.monotonic()))
            if self.worker is not None:
                stopped.append("worker")
            if self.appeals is not None:
                stopped.append("appeals consumer")
            if self.server is not None:
                stopped.append("console")
            self._close_producers()
            if self.state_path is not None:
                self.state_path.unlink(missing_ok=True)
            if self.broker is not None:
                self.broker.stop(BROKER_STOP_S)
                stopped.append("embedded broker")
            return stopped
        finally:
            kafka_log.setLevel(level)

    def _stop_sweeper(self) -> None:
        if self.publisher is not None:
            self.publisher.close(SWEEPER_STOP_S)

    def _close_producers(self) -> None:
        senders = [
            getattr(self.worker, "send_decision", None),
            getattr(self.worker, "send_dead_letter", None),
            getattr(self.appeals, "send_dead_letter", None),
        ]
        closed: set[int] = set()
        for sender in senders:
            producer = getattr(sender, "producer", None)
            if producer is None or id(producer) in closed:
                continue
            closed.add(id(producer))
            try:
                producer.close(timeout=PRODUCER_CLOSE_S)
            except Exception as exc:  # noqa: BLE001 - the process is going away anyway
                log.warning("could not close a Kafka producer: %s", exc)


def _stop_consumer(name: str, part: Worker | AppealConsumer, thread: threading.Thread) -> None:
    """Ask a consumer loop to stop, wait for it, then leave the group. A loop
    that does not stop in time keeps its consumer (not thread-safe to close from
    here): the group's session timeout hands its partitions on."""
    try:
        part.stop()
        thread.join(CONSUMER_STOP_S)
        if thread.is_alive():
            log.warning(
                "%s did not stop within %.0fs; its partitions move after the session timeout",
                name,
                CONSUMER_STOP_S,
            )
            return
        part.close()
    except Exception as exc:  # noqa: BLE001 - the process is going away anyway
        log.warning("could not stop the %s cleanly: %s", name, exc)


def _close_server(server: Any) -> None:
    """Close the console's listening socket and its open connections (waitress
    already stopped its request threads when ``run`` returned)."""
    from waitress import wasyncore

    socket_map = getattr(server, "map", None) or getattr(server, "_map", None)
    try:
        if socket_map is not None:
            wasyncore.close_all(socket_map, ignore_all=True)
        else:
            server.close()
    except Exception as exc:  # noqa: BLE001 - the process is going away anyway
        log.warning("could not close the console's sockets: %s", exc)


def _start_thread(target: Any, name: str, args: tuple[Any, ...] = ()) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, args=args, daemon=True)
    thread.start()
    return thread


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
