"""``moderation up``: the whole service on one machine.

With no ``KAFKA_BOOTSTRAP_SERVERS`` the embedded broker is started on loopback;
with no ``DATABASE_URL`` a SQLite file under ``./var/`` is used. Migrations run,
an admin is created on first start (password printed once), then a worker and
the appeals consumer run in threads and the console is served in the foreground.
Dev mode is on, so ``moderation publish`` can send events that point at local
files.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
from pathlib import Path

from sqlalchemy import func, select

from moderation.config import Settings
from moderation.errors import ConfigError

log = logging.getLogger("moderation")
STATE_FILE = "embedded.json"
PREFERRED_BROKER_PORT = 19092


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


def run_stack(settings: Settings, port: int | None = None) -> int:
    from waitress import serve

    from moderation import runtime
    from moderation.embedded import EmbeddedBroker, free_port
    from moderation.events import kafka
    from moderation.events.appeals import build_appeal_consumer
    from moderation.metrics import Metrics
    from moderation.storage.db import upgrade
    from moderation.web import create_app

    web_port = port or settings.web_port
    if not _port_free(web_port, settings.web_host):
        raise ConfigError(f"port {web_port} is in use: choose another with --port or WEB_PORT")
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_overrides(
        dev_mode=True,
        secret_key=settings.secret_key or _secret_key(data_dir),
    )
    runtime.configure_logging(settings)
    broker = None
    if not settings.kafka_bootstrap_servers:
        broker_port = PREFERRED_BROKER_PORT if _port_free(PREFERRED_BROKER_PORT) else free_port()
        broker = EmbeddedBroker(broker_port, log_path=data_dir / "broker.log").start()
        settings = settings.with_overrides(kafka_bootstrap_servers=broker.bootstrap)
        print(f"embedded Kafka-protocol broker on {broker.bootstrap} (in memory)")
    state_path = data_dir / STATE_FILE
    state_path.write_text(json.dumps({"kafka_bootstrap_servers": settings.kafka_bootstrap_servers}))
    try:
        kafka.ensure_topics(settings)
        upgrade(settings.database_url)
        print(f"database: {settings.database_url}")
        _ensure_admin(settings)
        metrics = Metrics()
        worker = runtime.build_worker(settings, metrics)
        threading.Thread(target=worker.run, name="worker", daemon=True).start()
        appeals = build_appeal_consumer(settings, metrics)
        threading.Thread(target=appeals.run, name="appeals", daemon=True).start()
        app = create_app(settings, metrics=metrics)
        app.extensions["moderation"].publisher.start_sweeper()
        print(f"review console: http://{settings.web_host}:{web_port}/")
        print("publish test uploads with: moderation publish path/to/image.jpg")
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve(app, host=settings.web_host, port=web_port, threads=8, ident="moderation")
        except KeyboardInterrupt:
            print("stopping")
        worker.stop()
        appeals.stop()
    finally:
        state_path.unlink(missing_ok=True)
        if broker is not None:
            broker.stop()
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
