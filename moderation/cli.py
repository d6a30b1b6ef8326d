"""The ``moderation`` command: one entry point, several roles.

moderation up                 everything on one machine (embedded broker + SQLite)
moderation worker             a consumer-group member of the pipeline
moderation appeals            consume appeal events: reopen decided items for another moderator
moderation web                the review console and JSON API
moderation db upgrade         apply database migrations
moderation user create NAME   add a console user
moderation publish FILE...    publish upload events for local images (dev mode)
moderation hash FILE...       print SHA-256, MD5, PDQ (and vPDQ for videos) of local files
moderation bank ...           create banks; add, import, export, withdraw hashes
moderation match FILE...      match local files against the banks, as the worker would
moderation token ...          API tokens for services and trusted flaggers
moderation exchange ...       sync StopNCII / NCMEC hash lists, send feedback
moderation evidence ...       export, verify, legal hold and purge preserved evidence
"""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from moderation import __version__
from moderation.config import Settings, load_settings
from moderation.domain import Role
from moderation.errors import ConfigError, FatalError, InvalidInput, RequestError, TransientError

log = logging.getLogger("moderation")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from kafka.errors import KafkaError
    from sqlalchemy.exc import OperationalError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, FatalError) as exc:
        print(f"moderation: {exc}", file=sys.stderr)
        return 2
    except RequestError as exc:
        print(f"moderation: {exc}", file=sys.stderr)
        return 1
    except TransientError as exc:
        print(f"moderation: {exc} (temporary: run it again later)", file=sys.stderr)
        return 3
    except OperationalError as exc:
        print(f"moderation: database unreachable: {str(exc.orig).strip()}", file=sys.stderr)
        return 3
    except KafkaError as exc:
        print(f"moderation: Kafka unavailable at KAFKA_BOOTSTRAP_SERVERS: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moderation",
        description="NCII-first moderation service: hash banks, nudity classifier, review queue. "
        "Configuration comes from environment variables (see docs/configuration.md).",
    )
    p.add_argument("--version", action="version", version=f"moderation {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    up = sub.add_parser("up", help="run broker (embedded unless KAFKA_BOOTSTRAP_SERVERS), worker and console")
    up.add_argument("--port", type=int, help="console port (default WEB_PORT or 8080)")
    up.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="consume upload events, hash, match, classify and route them")
    w.set_defaults(func=cmd_worker)

    ap = sub.add_parser("appeals", help="consume appeal events: reopen decided items for another moderator")
    ap.set_defaults(func=cmd_appeals)

    web = sub.add_parser("web", help="serve the review console and JSON API (/metrics on WEB_METRICS_PORT)")
    web.add_argument("--port", type=int, help="port (default WEB_PORT or 8080)")
    web.set_defaults(func=cmd_web)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(metavar="ACTION")
    dbu = db.add_parser("upgrade", help="apply all migrations to DATABASE_URL")
    dbu.set_defaults(func=cmd_db_upgrade)

    user = sub.add_parser("user", help="console users").add_subparsers(metavar="ACTION")
    uc = user.add_parser("create", help="create a user; prints a generated password unless --password-stdin")
    uc.add_argument("username")
    uc.add_argument("--role", choices=[r.value for r in Role], default="moderator")
    uc.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    uc.set_defaults(func=cmd_user_create)
    up_ = user.add_parser(
        "set-password",
        help="give a user a new password (prints a generated one unless --password-stdin); "
        "ends their open sessions and lifts a lockout",
    )
    up_.add_argument("username")
    up_.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    up_.set_defaults(func=cmd_user_change, change="set-password")
    for verb, helptext in (
        ("deactivate", "stop a user from logging in; ends their open sessions"),
        ("activate", "let a deactivated user log in again"),
        ("unlock", "lift a lockout after too many failed logins"),
    ):
        uv = user.add_parser(verb, help=helptext)
        uv.add_argument("username")
        uv.set_defaults(func=cmd_user_change, change=verb)

    pub = sub.add_parser(
        "publish", help="publish upload events for local image files (needs DEV_MODE workers)"
    )
    pub.add_argument("paths", nargs="+", metavar="FILE")
    pub.add_argument("--uploader", default="local-cli", help="uploader id to put in the events")
    pub.set_defaults(func=cmd_publish)

    h = sub.add_parser(
        "hash", help="print one JSON object per file: path, sha256, md5, pdq, pdq_quality (vpdq for videos)"
    )
    h.add_argument("paths", nargs="+", metavar="FILE")
    h.add_argument(
        "--json", action="store_true", help="JSON lines even on a terminal (the default when piped)"
    )
    h.add_argument(
        "--variants", action="store_true", help="also the PDQ of rotations, mirror images and trimmed borders"
    )
    h.set_defaults(func=cmd_hash)

    from moderation import cli_banks, cli_classify, cli_evidence, cli_exchanges

    cli_banks.register(sub)
    cli_classify.register(sub)
    cli_exchanges.register(sub)
    cli_evidence.register(sub)
    return p


# -- roles -----------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from moderation import evidence_crypto, readiness, runtime
    from moderation.metrics import Metrics

    settings = settings or load_settings()
    runtime.configure_logging(settings)
    evidence_crypto.check_key(settings)  # a bad EVIDENCE_KEY stops start-up, not the first removal
    metrics = Metrics()
    worker = runtime.build_worker(settings, metrics)
    check = readiness.consumer(worker, worker.sessions, settings)
    metrics.readiness.add("worker", check)
    server = runtime.serve_in_thread(
        runtime.consumer_ops_app(check, worker, metrics), settings.metrics_host, settings.metrics_port
    )
    _stop_on_signals(worker.stop)
    log.info("worker metrics on %s:%d/metrics", settings.metrics_host, settings.metrics_port)
    try:
        worker.run()
    finally:
        worker.close()  # settles a rebalance in progress, then leaves: partitions move at once
        server.shutdown()
    return 0


def cmd_appeals(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from moderation import readiness, runtime
    from moderation.events.appeals import build_appeal_consumer
    from moderation.metrics import Metrics

    settings = settings or load_settings()
    runtime.configure_logging(settings)
    metrics = Metrics()
    consumer = build_appeal_consumer(settings, metrics)
    check = readiness.consumer(consumer, consumer.sessions, settings)
    metrics.readiness.add("appeals", check)
    ops = runtime.consumer_ops_app(check, consumer, metrics)
    server = runtime.serve_in_thread(ops, settings.metrics_host, settings.metrics_port)
    _stop_on_signals(consumer.stop)
    log.info(
        "appeals consumer on %s, metrics on %s:%d/metrics",
        settings.appeals_topic,
        settings.metrics_host,
        settings.metrics_port,
    )
    try:
        consumer.run()
    finally:
        consumer.close()
        server.shutdown()
    return 0


def cmd_web(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from waitress import serve

    from moderation import runtime
    from moderation.web import create_app

    settings = settings or load_settings()
    runtime.configure_logging(settings)
    from moderation import readiness

    app = create_app(settings)
    services = app.extensions["moderation"]
    ready, detail = readiness.database(services.sessions)
    if not ready:  # start anyway: /readyz answers 503 until it answers, then the console works
        log.error("%s; /readyz answers 503 until it does", detail["error"])
    metrics_server = runtime.serve_web_metrics(settings, services.metrics)
    if metrics_server is not None:
        log.info("web metrics on %s:%d/metrics", settings.metrics_host, settings.web_metrics_port)
    elif not settings.metrics_token:
        log.warning("web metrics are not served: set WEB_METRICS_PORT (or METRICS_TOKEN)")
    services.publisher.start_sweeper()
    port = args.port or settings.web_port
    log.info("review console on http://%s:%d/", settings.web_host, port)
    serve(app, host=settings.web_host, port=port, threads=8, ident="moderation")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from moderation.storage.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    print("database is at the latest migration")
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    from moderation.storage.db import open_sessions
    from moderation.storage.users import UserError, create_user, generate_password

    settings = load_settings()
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else generate_password()
    with open_sessions(settings.database_url) as sessions, sessions() as session:
        try:
            create_user(session, args.username, password, args.role)
        except UserError as exc:
            print(f"moderation: {exc}", file=sys.stderr)
            return 1
        session.commit()
    print(f"created {args.role} {args.username!r}")
    if not args.password_stdin:
        print(f"password (shown once): {password}")
    return 0


def cmd_user_change(args: argparse.Namespace) -> int:
    from moderation.storage import users
    from moderation.storage.db import open_sessions

    settings = load_settings()
    password = ""
    if args.change == "set-password":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else users.generate_password()
    with open_sessions(settings.database_url) as sessions, sessions() as session:
        try:
            user = users.get_user(session, args.username)
            if args.change == "set-password":
                users.set_password(session, user, password)
            elif args.change == "unlock":
                users.unlock(session, user)
            else:
                users.set_active(session, user, args.change == "activate")
        except users.UserError as exc:
            print(f"moderation: {exc}", file=sys.stderr)
            return 1
        session.commit()
    print(f"{args.change}: {args.username!r}")
    if args.change == "set-password" and not args.password_stdin:
        print(f"password (shown once): {password}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from moderation.embedded_stack import run_stack

    return run_stack(load_settings(), args.port)


# -- tools -----------------------------------------------------------------------------
def cmd_publish(args: argparse.Namespace) -> int:
    from moderation.embedded_stack import discover_bootstrap
    from moderation.events import kafka
    from moderation.events.uploads import make_upload_event

    settings = load_settings()
    if not settings.kafka_bootstrap_servers:
        settings = settings.with_overrides(kafka_bootstrap_servers=discover_bootstrap(settings))
    send = kafka.TopicSender(kafka.make_producer(settings), settings.uploads_topic)
    failures = 0
    for raw in args.paths:
        path = Path(raw).resolve()
        if not path.is_file():
            print(f"moderation: {raw}: no such file", file=sys.stderr)
            failures += 1
            continue
        content_id = f"local-{uuid.uuid4().hex[:12]}"
        event = make_upload_event(
            event_id=str(uuid.uuid4()),
            content_id=content_id,
            uploader_id=args.uploader,
            media_url=path.as_uri(),
            media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        )
        send(content_id.encode(), json.dumps(event).encode())
        print(json.dumps({"path": raw, "event_id": event["event_id"], "content_id": content_id}))
    return 1 if failures else 0


def cmd_hash(args: argparse.Namespace) -> int:
    from moderation.cli_banks import hash_file

    settings = load_settings()
    as_json = args.json or not sys.stdout.isatty()
    failures = 0
    for raw in args.paths:
        try:
            hashes = hash_file(raw, settings, variants=args.variants)
        except OSError as exc:
            failures += 1
            print(json.dumps({"path": raw, "error": exc.strerror or str(exc)}), file=sys.stderr)
            continue
        except InvalidInput as exc:
            failures += 1
            print(json.dumps({"path": raw, "error": str(exc), "error_class": exc.code}), file=sys.stderr)
            continue
        row: dict[str, Any] = {
            "path": raw,
            "sha256": hashes.sha256,
            "md5": hashes.md5,
            "pdq": hashes.pdq,
            "pdq_quality": hashes.pdq_quality,
        }
        if args.variants:
            row["pdq_variants"] = dict(hashes.pdq_variants)
        if hashes.vpdq is not None:
            row["vpdq"] = hashes.vpdq
            row["vpdq_frames"] = len(hashes.vpdq_frames)
        if as_json:
            print(json.dumps(row))
        else:
            print(f"{raw}\n  sha256 {hashes.sha256}\n  md5    {hashes.md5}")
            print(f"  pdq    {hashes.pdq} (quality {hashes.pdq_quality})")
            for name, value in hashes.pdq_variants.items():
                print(f"  pdq    {value} ({name})")
            if hashes.vpdq is not None:
                print(f"  vpdq   {len(hashes.vpdq_frames)} frames")
    return 1 if failures else 0


def _stop_on_signals(stop: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing in-flight work and leaving the group", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(main())
