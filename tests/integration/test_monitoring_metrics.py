"""What the web role exports for alerts and dashboards, read back from a real
scrape of /metrics over PostgreSQL: queue SLA, outbox backlog, bank sizes,
readiness; and what it does when its database does not answer."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from moderation.embedded import free_port
from moderation.storage import banks
from moderation.storage.banks import EntrySpec
from moderation.storage.models import DeadLetter, Decision, utcnow
from tests.support.factories import make_item
from tests.support.web import make_app, scrape_metrics


def scrape(app) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = scrape_metrics(app)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_web_exports_sla_outbox_bank_sizes_and_readiness(settings_factory, sessions):
    settings = settings_factory(sla_near_hours=6)
    now = utcnow()
    with sessions() as s:
        late = make_item(1, due_at=now - timedelta(hours=1))
        near = make_item(2, due_at=now + timedelta(hours=2), tier="senior")
        later = make_item(3, due_at=now + timedelta(hours=30))
        decided = make_item(4, due_at=now - timedelta(hours=5), state="decided")
        s.add_all([late, near, later, decided])
        s.flush()
        s.add(
            Decision(
                idempotency_key="k1",
                item_id=decided.id,
                content_id="c4",
                action="remove",
                source="moderator",
                reason="ncii",
                payload={},
                created_at=now - timedelta(seconds=90),
            )
        )
        s.add(
            DeadLetter(
                source_topic="uploads",
                source_partition=0,
                source_offset=1,
                source_timestamp=1,
                error_class="invalid_event",
                key=b"",
                value=b"{",
                headers={},
                published_at=now,
            )
        )
        bank = banks.create_bank(s, "victims", "auto_remove", actor="test")
        banks.add_entries(s, bank, [EntrySpec("pdq", f"{i:064x}") for i in range(3)], added_by="test")
        banks.create_bank(s, "empty", "review", actor="test")
        s.commit()

    samples = scrape(make_app(settings))

    assert samples[("moderation_queue_sla_items", (("sla", "breached"), ("tier", "moderator")))] == 1
    assert samples[("moderation_queue_sla_items", (("sla", "near"), ("tier", "senior")))] == 1
    assert sum(v for (name, _), v in samples.items() if name == "moderation_queue_sla_items") == 2
    assert samples[("moderation_outbox_pending", (("outbox", "decisions"),))] == 1
    assert samples[("moderation_outbox_pending", (("outbox", "dead_letters"),))] == 0
    assert 85 <= samples[("moderation_outbox_oldest_pending_seconds", (("outbox", "decisions"),))] < 600
    assert samples[("moderation_outbox_oldest_pending_seconds", (("outbox", "dead_letters"),))] == 0
    assert samples[("moderation_bank_entries", (("action", "auto_remove"), ("bank", "victims")))] == 3
    assert samples[("moderation_bank_entries", (("action", "review"), ("bank", "empty")))] == 0
    assert samples[("moderation_ready", (("role", "web"),))] == 1
    # Only workers hold a bank index: a web replica exporting 0 would look like a
    # worker that lost its banks (and made the divergence alert fire for ever).
    assert not any(name.startswith("moderation_bank_index_entries") for name, _ in samples)


def test_web_with_a_database_that_does_not_answer_says_so(settings_factory):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    app = make_app(settings_factory(database_url=dead))
    client = app.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json() == {
        "ok": False,
        "database": False,
        "error": "the database does not answer: check DATABASE_URL and that the server is up",
    }
    assert "127.0.0.1" not in ready.get_data(as_text=True)  # no driver message on an open probe

    api = client.get("/api/v1/queue", headers={"Authorization": "Basic YTpi"})
    assert api.status_code == 503, api.get_data(as_text=True)
    assert api.headers["Retry-After"] == "30"
    assert "database is not answering" in api.get_json()["error"]

    page = client.post("/login", data={"username": "a", "password": "b"})
    assert page.status_code in (400, 503)  # CSRF first; never a bare 500

    samples = scrape(app)  # the scrape itself still works
    assert samples[("moderation_ready", (("role", "web"),))] == 0
    assert client.get("/healthz").status_code == 200
