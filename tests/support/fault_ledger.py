"""Workloads and the ledger of fault-injection runs: publish a known mix of
upload events, then check that every record got exactly one outcome.

A workload is a list of records for the uploads topic with, for each, the
outcome it must get: ``review``, ``allow`` (allowlist bank), ``auto_remove``
(victims bank), ``dead_letter`` (media that answers 404) or ``bad_record``
(not an event at all: dead-lettered by source position). ``audit`` compares the
database and the decisions topic with it and returns the figures of the run.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from moderation.domain import EntrySpec
from moderation.events.uploads import make_upload_event
from moderation.hashing import hash_media
from moderation.media.decode import decode_image
from moderation.storage import banks
from moderation.storage.models import DeadLetter, Decision, Item
from tests.support.http import MediaServer
from tests.support.images import encode, synthetic_image

KINDS = ("review", "allow", "auto_remove", "dead_letter", "bad_record")
DEFAULT_MIX = {"review": 0.55, "allow": 0.2, "auto_remove": 0.15, "dead_letter": 0.05, "bad_record": 0.05}
# the worker's classifier for a workload: everything the banks do not decide goes to review
CLASSIFIER = "fixed:0.9"


@dataclass
class Workload:
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # event id -> outcome
    bad_records: int = 0

    @property
    def sent(self) -> int:
        return len(self.records)

    def counts(self) -> Counter[str]:
        counts = Counter(self.expected.values())
        counts["bad_record"] = self.bad_records
        return counts


def build_workload(
    sessions: sessionmaker[Session],
    media: MediaServer,
    count: int,
    mix: dict[str, float] | None = None,
    seed: int = 0,
    size: tuple[int, int] = (96, 128),
) -> Workload:
    """``count`` records in the proportions of ``mix``; creates the two banks the
    ``allow`` and ``auto_remove`` events match (call once per database)."""
    mix = mix or DEFAULT_MIX
    rng = random.Random(seed)
    pictures = {kind: encode(synthetic_image(1000 + seed * 10 + i, size)) for i, kind in enumerate(KINDS)}
    _bank(sessions, "faults-victims", "auto_remove", pictures["auto_remove"])
    _bank(sessions, "faults-benign", "allow", pictures["allow"])
    urls = {
        "review": media.add(f"/faults/{seed}/review.jpg", pictures["review"]),
        "allow": media.add(f"/faults/{seed}/allow.jpg", pictures["allow"]),
        "auto_remove": media.add(f"/faults/{seed}/victim.jpg", pictures["auto_remove"]),
        "dead_letter": media.url(f"/faults/{seed}/missing.jpg"),  # 404
    }
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    workload = Workload()
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        if kind == "bad_record":
            workload.bad_records += 1
            workload.records.append((f"bad-{i}".encode(), f"not an event #{i}".encode()))
            continue
        event_id = str(uuid.UUID(int=rng.getrandbits(128)))
        event = make_upload_event(event_id, f"c-{seed}-{i}", f"u-{i % 50}", urls[kind], "image/jpeg")
        workload.expected[event_id] = kind
        workload.records.append((event["content_id"].encode(), json.dumps(event).encode()))
    return workload


def _bank(sessions: sessionmaker[Session], name: str, action: str, data: bytes) -> None:
    with sessions() as s:
        bank = banks.create_bank(s, name, action, actor="faults")
        hashes = hash_media(data, decode_image(data, 10**8)[1])
        banks.add_entries(s, bank, [EntrySpec(k, v) for k, v in hashes.signals().items()], added_by="faults")
        s.commit()


def publish_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce ``records`` (acks=all) and wait for all of them; how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=60)
        return len(futures)
    finally:
        producer.close()


class Streamer:
    """Produces records in the background, spread evenly over ``seconds``."""

    def __init__(
        self, bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], seconds: float
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = list(records)
        self.seconds = seconds
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="streamer", daemon=True)

    def start(self) -> Streamer:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the streamer did not finish"
        if self.error is not None:
            raise AssertionError(f"publishing failed: {self.error!r}")

    def _run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
            chunks = max(1, int(self.seconds * 10))
            size = max(1, -(-len(self.records) // chunks))
            started = time.monotonic()
            for n, start in enumerate(range(0, len(self.records), size)):
                futures = [
                    producer.send(self.topic, key=k, value=v) for k, v in self.records[start : start + size]
                ]
                for f in futures:
                    f.get(timeout=60)
                self.sent += len(futures)
                pause = started + (n + 1) * self.seconds / chunks - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc


def outcome_count(sessions: sessionmaker[Session]) -> int:
    """Items plus dead letters stored so far."""
    with sessions() as s:
        items = s.scalar(select(func.count()).select_from(Item)) or 0
        dead = s.scalar(select(func.count()).select_from(DeadLetter)) or 0
    return items + dead


def wait_for_outcomes(
    sessions: sessionmaker[Session],
    expected: int,
    timeout: float,
    while_waiting: Callable[[], None] | None = None,
) -> float:
    """Wait until ``expected`` outcomes are stored and every decision and dead
    letter is published; the time it took. Raises AssertionError on timeout."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if while_waiting is not None:
            while_waiting()
        if outcome_count(sessions) >= expected:
            with sessions() as s:
                unpublished = (
                    s.scalar(
                        select(func.count()).select_from(Decision).where(Decision.published_at.is_(None))
                    )
                    or 0
                ) + (
                    s.scalar(
                        select(func.count()).select_from(DeadLetter).where(DeadLetter.published_at.is_(None))
                    )
                    or 0
                )
            if not unpublished:
                return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{outcome_count(sessions)}/{expected} outcomes within {timeout:.0f}s")


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record on ``topic`` up to its current end (no group, no commits)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        missing = {
            tp.partition: ends[tp] - consumer.position(tp) for tp in tps if consumer.position(tp) < ends[tp]
        }
        assert not missing, f"could not read {topic} to its end: {missing}"
        return records
    finally:
        consumer.close()


@dataclass
class Figures:
    """What one fault-injection run shows."""

    scenario: str
    sent: int = 0
    outcomes: int = 0  # records with exactly one outcome
    lost: int = 0  # records with none
    duplicated_db: int = 0  # records with more than one outcome, items with >1 automatic decision
    wrong: int = 0  # an outcome other than the one the record must get
    decisions_db: int = 0
    decision_deliveries: int = 0  # decision records on the topic
    duplicate_deliveries: int = 0  # of which repeats of an idempotency key already delivered
    missing_on_topic: int = 0  # decisions in the database never delivered
    faults: int = 0  # kills, cuts, joins/leaves... injected
    recover_s: float = 0.0  # last fault healed -> every outcome stored and published
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated_db or self.wrong or self.missing_on_topic or self.problems)

    def row(self) -> str:
        notes = ", ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"| {self.scenario} | {self.sent} | {self.outcomes} | {self.lost} | {self.duplicated_db} "
            f"| {self.wrong} | {self.decisions_db} | {self.decision_deliveries} "
            f"| {self.duplicate_deliveries} "
            f"| {self.faults} | {self.recover_s:.1f} | {self.elapsed_s:.1f} | {notes} |"
        )

    def assert_ok(self) -> None:
        assert self.ok, f"{self.scenario}: {self.row()}\n" + "\n".join(self.problems[:30])


def audit(
    scenario: str,
    sessions: sessionmaker[Session],
    workload: Workload,
    decisions: Sequence[Any],
    accept: dict[str, set[str]] | None = None,
) -> Figures:
    """Compare the database and the records of the decisions topic with ``workload``.
    ``accept``: outcomes accepted for a kind besides itself (a real classifier
    sends ``review`` events to review or allow)."""
    fig = Figures(scenario, sent=workload.sent)
    with sessions() as s:
        items = s.execute(select(Item.id, Item.event_id, Item.route)).all()
        dead = s.execute(
            select(DeadLetter.event_id, DeadLetter.source_partition, DeadLetter.source_offset)
        ).all()
        rows = s.execute(select(Decision.item_id, Decision.idempotency_key, Decision.published_at)).all()
    outcomes: dict[str, list[str]] = {}
    for _id, event_id, route in items:
        outcomes.setdefault(event_id, []).append(route)
    for event_id, _p, _o in dead:
        if event_id is not None:
            outcomes.setdefault(event_id, []).append("dead_letter")
    for event_id, kind in workload.expected.items():
        got = outcomes.get(event_id, [])
        if not got:
            fig.lost += 1
            fig.problems.append(f"lost: {event_id} ({kind})")
        elif len(got) > 1:
            fig.duplicated_db += 1
            fig.problems.append(f"{len(got)} outcomes for {event_id}: {got}")
        else:
            fig.outcomes += 1
            if got[0] != kind and got[0] not in (accept or {}).get(kind, set()):
                fig.wrong += 1
                fig.problems.append(f"{event_id}: {got[0]}, expected {kind}")
    strangers = set(outcomes) - set(workload.expected)
    if strangers:
        fig.problems.append(f"{len(strangers)} outcomes for events never sent")
    bad = [(p, o) for event_id, p, o in dead if event_id is None]
    positions = Counter(bad)
    fig.duplicated_db += sum(n - 1 for n in positions.values() if n > 1)
    fig.outcomes += min(len(positions), workload.bad_records)
    if len(positions) < workload.bad_records:
        fig.lost += workload.bad_records - len(positions)
        fig.problems.append(f"{workload.bad_records - len(positions)} bad records never dead-lettered")
    elif len(positions) > workload.bad_records:
        fig.problems.append(f"{len(positions)} dead letters for {workload.bad_records} bad records")

    per_item = Counter(item_id for item_id, _k, _p in rows)
    doubled = sum(1 for n in per_item.values() if n > 1)
    if doubled:
        fig.duplicated_db += doubled
        fig.problems.append(f"{doubled} items with more than one automatic decision")
    routes = {item_id: route for item_id, _e, route in items}
    undecided = [i for i, r in routes.items() if r in ("allow", "auto_remove") and i not in per_item]
    if undecided:
        fig.lost += len(undecided)
        fig.problems.append(f"{len(undecided)} allow/auto_remove items without a decision")
    unpublished = sum(1 for _i, _k, published in rows if published is None)
    if unpublished:
        fig.problems.append(f"{unpublished} decisions never marked published")
    fig.decisions_db = len(rows)

    keys = Counter(json.loads(r.value)["idempotency_key"] for r in decisions)
    fig.decision_deliveries = sum(keys.values())
    fig.duplicate_deliveries = fig.decision_deliveries - len(keys)
    db_keys = {k for _i, k, _p in rows}
    fig.missing_on_topic = len(db_keys - set(keys))
    if fig.missing_on_topic:
        fig.problems.append(f"{fig.missing_on_topic} decisions never delivered on the topic")
    phantom = set(keys) - db_keys
    if phantom:
        fig.problems.append(f"{len(phantom)} idempotency keys on the topic that the database lacks")
    return fig


HEADER = (
    "| scenario | sent | outcomes | lost | dup (db) | wrong | decisions | deliveries | dup deliveries "
    "| faults | recover s | total s | notes |"
)


def table(figures: Sequence[Figures]) -> str:
    """The figures as a markdown table."""
    rule = "|" + "|".join(" --- " for _ in range(HEADER.count("|") - 1)) + "|"
    return "\n".join([HEADER, rule, *(f.row() for f in figures)])
