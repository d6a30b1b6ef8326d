"""The per-address login rate limit: one token bucket per client address, in the
database so that the limit holds across web replicas.

With a limit of N attempts a minute, an address may make N attempts at once
and then one every 60/N seconds (the generic cell rate algorithm: the row keeps
``tat``, the time at which the bucket is full again). Taking an attempt is one
atomic ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING``: concurrent
requests on any number of replicas can never take more than the bucket holds,
and, unlike counts per calendar minute, a burst that straddles a minute
boundary gets no second allowance.
"""

from __future__ import annotations

import math
import time

from sqlalchemy import Float, case, delete, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from moderation.storage.models import LoginAttempt

PERIOD_S = 60.0
# Float rounding must not refuse the N-th attempt of a burst.
EPSILON_S = 1e-6
# Buckets full again this long ago are dropped (they mean the same as no row).
KEEP_S = 600.0
MAX_ADDRESS = 64


def _interval(limit: int) -> float:
    return PERIOD_S / limit


def take(session: Session, address: str, limit: int, now: float | None = None) -> int | None:
    """Count one attempt from ``address`` if its bucket allows it: None when it
    does, else whole seconds until it would (at least 1). ``limit`` > 0.
    Left in ``session`` for the caller to commit."""
    now = time.time() if now is None else now
    interval = _interval(limit)
    key = address[:MAX_ADDRESS]
    tat = LoginAttempt.tat
    start = case((tat > now, tat), else_=literal(now, Float))
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    taken = session.scalar(
        upsert(LoginAttempt)
        .values(address=key, tat=now + interval)
        .on_conflict_do_update(
            index_elements=["address"],
            set_={"tat": start + interval},
            where=start + interval - now <= PERIOD_S + EPSILON_S,
        )
        .returning(LoginAttempt.tat)
    )
    if taken is not None:
        if taken <= now + interval + EPSILON_S:  # a fresh bucket: now and then, drop old ones
            session.execute(
                delete(LoginAttempt)
                .where(LoginAttempt.tat < now - KEEP_S)
                .execution_options(synchronize_session=False)
            )
        return None
    return _wait(session, key, interval, now) or 1  # refused: a refund since is no reason to say 0


def refund(session: Session, address: str, limit: int) -> None:
    """Give back an attempt taken with ``take`` (a correct HTTP Basic password:
    ordinary API use, which does not count). Left for the caller to commit."""
    session.execute(
        update(LoginAttempt)
        .where(LoginAttempt.address == address[:MAX_ADDRESS])
        .values(tat=LoginAttempt.tat - _interval(limit))
        .execution_options(synchronize_session=False)
    )


def over_limit(session: Session, address: str, limit: int, now: float | None = None) -> int | None:
    """Whether ``address`` could not take an attempt now (read only): None when
    it could, else whole seconds until it could."""
    now = time.time() if now is None else now
    return _wait(session, address[:MAX_ADDRESS], _interval(limit), now)


def _wait(session: Session, key: str, interval: float, now: float) -> int | None:
    tat = session.scalar(select(LoginAttempt.tat).where(LoginAttempt.address == key))
    if tat is None:
        return None
    excess = max(tat, now) + interval - now - PERIOD_S
    return None if excess <= EPSILON_S else max(1, math.ceil(excess))
