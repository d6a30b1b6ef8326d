"""Engine and session factory; schema migrations via Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

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


def _make_sqlite_folder(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        _make_sqlite_folder(url)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        given = make_url(url).query
        connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in given}
        kwargs.update(pool_size=10, max_overflow=20, connect_args=connect_args)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


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
