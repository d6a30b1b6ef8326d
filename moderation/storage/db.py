"""Engine and session factory; schema migrations via Alembic."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from moderation.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def is_unicode_text(value: str) -> bool:
    """False for lone surrogates (JSON "\\ud800"), which no database column can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalise_url(url: str) -> str:
    # Accept the plain libpq form operators paste; we always drive psycopg 3.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# A partitioned database must fail a query, not hang it: the worker then pauses
# its partitions and retries. Parameters in DATABASE_URL take precedence.
PG_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


# How much longer than the statement timeout the client waits for an answer
# before it gives the connection up (the server's own cancel comes first).
ANSWER_GRACE_S = 5.0


@dataclass(frozen=True)
class Timeouts:
    """How long a role waits for PostgreSQL, in milliseconds (0: no bound).

    ``statement_ms`` and ``lock_ms`` go to the server (``statement_timeout``,
    ``lock_timeout``): a slow statement or a lock wait fails, and the
    connection stays usable. ``tcp_user_ms`` is libpq's ``tcp_user_timeout``:
    data the network leaves unacknowledged that long closes the connection (a
    partition). A server that acknowledges but never answers (frozen, or a
    proxy in front of a dead one) trips neither, so the client itself gives up
    after ``statement_ms`` plus ANSWER_GRACE_S and closes the connection. The
    long-running roles use these (``Timeouts.of``); migrations and shell
    commands (bulk imports) do not."""

    statement_ms: int = 0
    lock_ms: int = 0
    tcp_user_ms: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Timeouts:
        return cls(
            settings.database_statement_timeout_ms,
            settings.database_lock_timeout_ms,
            settings.database_tcp_user_timeout_ms,
        )

    @property
    def answer_s(self) -> float | None:
        """The longest the client waits for any one answer; None: for ever."""
        return self.statement_ms / 1000 + ANSWER_GRACE_S if self.statement_ms else None

    def connect_args(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """libpq parameters; those in DATABASE_URL (``given``) take precedence
        (server settings in its ``options`` come after ours, so they win)."""
        settings = [("statement_timeout", self.statement_ms), ("lock_timeout", self.lock_ms)]
        options = " ".join(f"-c {name}={ms}" for name, ms in settings if ms)
        args: dict[str, Any] = {}
        if options:
            extra = given.get("options")
            args["options"] = f"{options} {extra}" if isinstance(extra, str) and extra else options
        if self.tcp_user_ms and "tcp_user_timeout" not in given:
            args["tcp_user_timeout"] = self.tcp_user_ms
        return args


@cache
def _bounded_connection_class() -> Any:
    import psycopg

    wait_timeout = getattr(psycopg.errors, "_WaitTimeout", psycopg.errors.OperationalError)

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        """Waits at most ``answer_timeout_s`` for any answer (a result, a commit),
        then closes itself and raises OperationalError: SQLAlchemy then treats
        it as a disconnect and discards the pool's other connections too."""

        answer_timeout_s: float | None = None

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            bound = self.answer_timeout_s
            if timeout is not None or not bound:
                return super().wait(gen, interval, timeout)
            try:
                return super().wait(gen, interval, bound)
            except wait_timeout:
                self.close()
                raise psycopg.OperationalError(
                    f"the database did not answer within {bound:g} s: connection closed"
                ) from None

    return BoundedConnection


def _bound_answers(engine: Engine, answer_s: float) -> None:
    @event.listens_for(engine, "do_connect")
    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        conn = _bounded_connection_class().connect(*cargs, **cparams)
        conn.answer_timeout_s = answer_s
        return conn


def _make_sqlite_folder(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str, timeouts: Timeouts | None = None) -> Engine:
    """An engine on ``url``; ``timeouts`` bound the waits on PostgreSQL (the
    long-running roles: ``role_engine``)."""
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        _make_sqlite_folder(url)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        given = make_url(url).query
        connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in given}
        if timeouts is not None:
            connect_args.update(timeouts.connect_args(given))
        kwargs.update(pool_size=10, max_overflow=20, connect_args=connect_args)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif timeouts is not None and timeouts.answer_s:
        _bound_answers(engine, timeouts.answer_s)
    return engine


def role_engine(settings: Settings) -> Engine:
    """The engine of a long-running role (worker, appeals, web): DATABASE_URL
    with the DATABASE_*_TIMEOUT_MS bounds."""
    return make_engine(settings.database_url, Timeouts.of(settings))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def prepare_embedded(url: str) -> None:
    """Migrate the embedded SQLite default on first use, so shell commands work
    on a fresh machine; a server database is migrated by `moderation db upgrade`."""
    if normalise_url(url).startswith("sqlite"):
        _make_sqlite_folder(url)
        upgrade(url)


@contextmanager
def open_sessions(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``url`` for one shell command: the embedded default is
    migrated first, and the engine is closed when the command ends."""
    prepare_embedded(url)
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
