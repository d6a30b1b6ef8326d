"""Queue order and review deadlines. Pure: no I/O.

An open item is served by two keys (storage/queue.py claims with them):

- ``due_at``, its SLA deadline: arrival + the SLA of its reason (``SLA_HOURS``).
  Items within ``SLA_NEAR_HOURS`` of their deadline are served first, soonest first.
- ``rank_at``, its rank: arrival - ``PRIORITY_POINT_MINUTES`` per priority point.
  Everything else is served by rank, earliest first, so an item's priority (bank
  severity, classifier score) and its waiting time trade off at a fixed rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from types import MappingProxyType

DEFAULT_KEY = "default"


def parse_sla_hours(text: str) -> dict[str, float]:
    """``"ncii=48,default=48"`` -> ``{"ncii": 48.0, "default": 48.0}``. A missing
    ``default`` is 48 hours."""
    table: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        try:
            hours = float(value)
        except ValueError:
            hours = -1.0
        if not sep or not key or not hours > 0:
            raise ValueError(f"SLA_HOURS: {part!r} is not reason=hours with hours > 0")
        table[key] = hours
    table.setdefault(DEFAULT_KEY, 48.0)
    return table


@lru_cache(maxsize=8)
def sla_table(text: str) -> Mapping[str, float]:
    """``parse_sla_hours``, parsed once per distinct setting value (every queued
    item is scheduled with it)."""
    return MappingProxyType(parse_sla_hours(text))


def sla_hours(table: Mapping[str, float], *reasons: str | None) -> float:
    """The SLA of the first of ``reasons`` the table names, else the default."""
    for reason in reasons:
        if reason and reason in table:
            return table[reason]
    return table[DEFAULT_KEY]


def due_at(start: datetime, hours: float) -> datetime:
    return start + timedelta(hours=hours)


def rank_at(arrived: datetime, priority: int, point_minutes: float) -> datetime:
    return arrived - timedelta(minutes=point_minutes * priority)


def seconds_left(due: datetime | None, now: datetime) -> int | None:
    """Whole seconds until the deadline (negative once breached); None without one."""
    if due is None:
        return None
    return int((due - now).total_seconds() // 1)


def is_near(due: datetime | None, now: datetime, near_hours: float) -> bool:
    """Served before everything else in its tier: within ``near_hours`` of the deadline, or past it."""
    return due is not None and due < now + timedelta(hours=near_hours)


def describe_duration(seconds: int) -> str:
    """``9000`` -> ``"2 h 30 min"``: the two largest units, zero parts dropped."""
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [(days, "d"), (hours, "h")]
    elif hours:
        parts = [(hours, "h"), (minutes, "min")]
    elif minutes:
        parts = [(minutes, "min")]
    else:
        parts = [(secs, "s")]
    return " ".join(f"{n} {unit}" for n, unit in parts if n) or "0 s"


def describe_sla(seconds: int | None) -> str:
    """What the console shows: ``"5 h 10 min left"``, ``"breached 3 h ago"``."""
    if seconds is None:
        return "no deadline"
    if seconds < 0:
        return f"breached {describe_duration(seconds)} ago"
    return f"{describe_duration(seconds)} left"
