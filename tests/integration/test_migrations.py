"""Every migration goes up and down on SQLite and PostgreSQL, with rows present."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from moderation.storage.db import alembic_config, upgrade

ADMIN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/migrations.db"
        return
    name = f"moderation_migrations_{uuid.uuid4().hex[:8]}"
    admin = ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _insert_item(url: str, model_version: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO items (event_id, content_id, uploader_id, media_url, media_type, event,"
                " sha256, md5, pdq, pdq_quality, model_version, matches, route, reason, priority,"
                " state, tier, created_at)"
                " VALUES ('e1', 'c1', 'u1', 'http://x', 'image/jpeg', '{}', :h, :m, :p, 80, :mv, '[]',"
                " 'review', 'classifier', 10, 'pending', 'moderator', CURRENT_TIMESTAMP)"
            ),
            {"h": "a" * 64, "m": "b" * 32, "p": "c" * 64, "mv": model_version},
        )
    engine.dispose()


def test_migrations_go_down_and_up_again_with_rows_present(fresh_url: str) -> None:
    config = alembic_config(fresh_url)
    upgrade(fresh_url)
    long_version = "+".join(
        ["open_nsfw-864bb37bf886", "nsfwjs_mobilenet_v2_mid-0123456789ab", "nsfwjs_inception_v3-0123456789ab"]
        + ["custom_model-0123456789ab"]
    )
    assert len(long_version) > 100
    _insert_item(fresh_url, long_version)

    command.downgrade(config, "0003")
    engine = create_engine(fresh_url)
    columns = {c["name"] for c in inspect(engine).get_columns("items")}
    assert "model_scores" not in columns and "regions" not in columns
    with engine.connect() as conn:
        assert conn.execute(text("SELECT model_version FROM items")).scalar_one() == long_version[:100]
    engine.dispose()

    upgrade(fresh_url)
    command.downgrade(config, "base")
    upgrade(fresh_url)
    engine = create_engine(fresh_url)
    assert "model_scores" in {c["name"] for c in inspect(engine).get_columns("items")}
    engine.dispose()
