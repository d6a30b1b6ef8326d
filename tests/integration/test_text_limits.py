"""Free text is bounded at every boundary by one rule (moderation/text_limits.py):
over-long input is refused with the field and the limit, never cut, and nothing
is stored. Real requests through the Flask test client on PostgreSQL; the
appeals consumer with a fake record. A 1 MiB moderator note once made a
decision the broker refused, and that stopped every worker
(tests/e2e/test_set_aside_e2e.py is the other half of that fix)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from moderation import text_limits
from moderation.exchanges.formats import read_entries
from moderation.hashing.signals import make_entry
from moderation.storage import banks, evidence, tokens
from moderation.storage.models import Appeal, AuditRecord, BankEntry, DeadLetter, Decision, Item, User
from tests.integration.test_appeals import Record, make_consumer, post_appeal, removed_by
from tests.support.reviewers import World, add_item

NOTE_LIMIT_MESSAGE = "note is too long: 2,001 characters, at most 2,000 allowed"
MD5 = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def world(db_url, sessions):
    return World(db_url, sessions)


def count(sessions: Any, model: Any, *where: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def form(reviewer: Any, **fields: str) -> dict[str, str]:
    return {"csrf_token": reviewer.csrf, **fields}


# -- decisions: the console form -------------------------------------------------------------
def test_the_console_refuses_a_long_note_and_keeps_the_claim_and_what_was_typed(world, sessions):
    item_id = add_item(sessions, 1)
    mo = world.reviewer("mo")
    assert mo.claim() == item_id
    note = "n" * 2001
    resp = mo.client.post(
        f"/items/{item_id}/decide", data=form(mo, action="remove", reason="adult_nudity", note=note)
    )
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert f"Nothing decided: {NOTE_LIMIT_MESSAGE}. Shorten the note and decide again." in html
    assert f'value="{note}"' in html  # what the moderator wrote is on the page again
    assert 'value="adult_nudity" data-key="2" checked' in html  # and the reason chosen
    assert 'id="decide"' in html  # the form is there: the claim is still the moderator's
    item = world.item(item_id)
    assert item.state == "claimed" and item.claimed_by == _user_id(sessions, "mo")
    assert count(sessions, Decision) == 0 and world.sent == []

    resp = mo.client.post(
        f"/items/{item_id}/decide", data=form(mo, action="remove", reason="ncii", note="n" * 2000)
    )
    assert resp.status_code == 302
    assert world.sent[0]["note"] == "n" * 2000 and world.item(item_id).state == "decided"


def test_the_console_refuses_a_long_note_for_the_whole_group_too(world, sessions):
    a = add_item(sessions, 1, group_key="item:1")
    add_item(sessions, 2, group_key="item:1")
    mo = world.reviewer("mo")
    assert mo.claim() == a
    resp = mo.client.post(
        f"/items/{a}/decide",
        data=form(mo, action="remove", reason="ncii", note="n" * 2001, apply_to_group="1"),
    )
    assert resp.status_code == 400 and NOTE_LIMIT_MESSAGE in resp.get_data(as_text=True)
    assert count(sessions, Decision) == 0


def test_the_group_page_refuses_a_long_note_and_keeps_the_choices(world, sessions):
    a = add_item(sessions, 1, group_key="item:1")
    b = add_item(sessions, 2, group_key="item:1")
    sen = world.reviewer("sen")
    resp = sen.client.post(
        f"/groups/{a}/decide",
        data={
            **form(sen, action="allow", reason="not_violating", note="n" * 2001),
            "member": [str(a), str(b)],
        },
    )
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert NOTE_LIMIT_MESSAGE in html
    assert f'value="{a}" class="member" aria-label="Item {a}" checked' in html
    assert 'value="not_violating" checked' in html
    assert count(sessions, Decision) == 0


# -- decisions: the JSON API -----------------------------------------------------------------
@pytest.mark.parametrize("apply_to_group", [False, True])
def test_the_api_refuses_a_long_note_instead_of_cutting_it(world, sessions, apply_to_group):
    item_id = add_item(sessions, 1, group_key="item:1")
    mo = world.reviewer("mo")
    assert mo.claim() == item_id
    body = {"action": "remove", "reason": "ncii", "note": "n" * 2001, "apply_to_group": apply_to_group}
    resp = mo.post_json(f"/api/v1/items/{item_id}/decision", body)
    assert (resp.status_code, resp.get_json()) == (400, {"error": NOTE_LIMIT_MESSAGE})
    assert count(sessions, Decision) == 0 and world.item(item_id).state == "claimed"
    resp = mo.post_json(f"/api/v1/items/{item_id}/decision", {**body, "note": "n" * 2000})
    assert resp.status_code == 201 and resp.get_json()["note"] == "n" * 2000


def test_review_decide_holds_the_limit_for_every_caller(world, sessions):
    from moderation import review
    from moderation.review import ReviewError

    item_id = add_item(sessions, 1)
    world.force_claim(item_id, "mo")
    with sessions() as s:
        item, user = s.get(Item, item_id), s.scalar(select(User).where(User.username == "mo"))
        with pytest.raises(ReviewError, match="note is too long") as refused:
            review.decide(s, item, user, "remove", "ncii", "n" * 1_048_576)
    assert refused.value.status == 400


# -- appeals ---------------------------------------------------------------------------------
@pytest.fixture
def appeal_token(sessions) -> str:
    with sessions() as s:
        secret = tokens.create_token(s, "appeals", ["appeals:submit"], created_by="test")
        s.commit()
    return secret


def test_the_appeals_api_refuses_long_fields_naming_them(world, sessions, appeal_token):
    item_id = removed_by(world, "mo")
    cases = {
        "statement": ("x" * 5001, "statement is too long: 5,001 characters, at most 5,000 allowed"),
        "submitted_by": ("x" * 201, "submitted_by is too long: 201 characters, at most 200 allowed"),
        "appeal_id": ("x" * 201, "appeal_id is too long: 201 characters, at most 200 allowed"),
    }
    for field, (value, message) in cases.items():
        body = {"appeal_id": "a-1", "item_id": item_id, field: value}
        resp = post_appeal(world, appeal_token, **body)
        assert (resp.status_code, resp.get_json()) == (400, {"error": message}), field
    assert count(sessions, Appeal) == 0
    assert (
        post_appeal(world, appeal_token, appeal_id="a-1", item_id=item_id, statement="x" * 5000).status_code
        == 201
    )


def test_a_long_statement_on_the_topic_is_an_invalid_appeal(world, sessions):
    removed_by(world, "mo")
    consumer, dead, _ = make_consumer(world, [])
    record = Record(json.dumps({"appeal_id": "k-1", "content_id": "c1", "statement": "x" * 5001}).encode())
    assert consumer.handle(record) == "invalid"
    assert count(sessions, Appeal) == 0
    with sessions() as s:
        assert s.scalar(select(DeadLetter.error_class)) == "invalid_appeal"
    assert dead[0][2]["error_message"] == b"statement is too long: 5,001 characters, at most 5,000 allowed"


# -- banks: submissions, the bank API, the admin form, imports -------------------------------
@pytest.fixture
def flagger(sessions) -> str:
    with sessions() as s:
        banks.create_bank(s, "helpline", "review", actor="test")
        secret = tokens.create_token(
            s, "flagger", ["hashes:submit", "banks:write"], bank="helpline", created_by="t"
        )
        s.commit()
    return secret


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"case_id": "c" * 201}, "case_id is too long: 201 characters, at most 200 allowed"),
        ({"case_id": "case-1", "note": "n" * 2001}, NOTE_LIMIT_MESSAGE),
    ],
)
def test_hash_submissions_refuse_long_fields(world, sessions, flagger, body, message):
    resp = world.app.test_client().post(
        "/api/v1/submissions",
        json={**body, "hashes": [{"signal": "md5", "value": MD5}]},
        headers={"Authorization": f"Bearer {flagger}"},
    )
    assert (resp.status_code, resp.get_json()) == (400, {"error": message})
    assert count(sessions, BankEntry) == 0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"note": "n" * 2001}, f"entries[0]: {NOTE_LIMIT_MESSAGE}"),
        (
            {"source_ref": "r" * 201},
            "entries[0]: source_ref is too long: 201 characters, at most 200 allowed",
        ),
        ({"case_id": "c" * 201}, "entries[0]: case_id is too long: 201 characters, at most 200 allowed"),
    ],
)
def test_the_bank_api_refuses_long_entry_fields(world, sessions, flagger, entry, message):
    resp = world.app.test_client().post(
        "/api/v1/banks/helpline/entries",
        json={"entries": [{"signal": "md5", "value": MD5, **entry}]},
        headers={"Authorization": f"Bearer {flagger}"},
    )
    assert (resp.status_code, resp.get_json()) == (400, {"error": message})
    assert count(sessions, BankEntry) == 0


def test_the_admin_forms_refuse_long_fields_with_a_flash_message(world, sessions, flagger):
    ada = world.reviewer("ada")
    cases = [
        ("/admin/banks/helpline/entries", {"hashes": f"md5 {MD5}", "note": "n" * 2001}, NOTE_LIMIT_MESSAGE),
        (
            "/admin/banks/helpline/entries",
            {"hashes": f"md5 {MD5}", "case_id": "c" * 201},
            "case_id is too long: 201 characters, at most 200 allowed",
        ),
        (
            "/admin/banks",
            {
                "name": "other",
                "action": "review",
                "description": "d" * 2001,
                "pdq_distance": "31",
                "vpdq_share": "0.8",
            },
            "description is too long: 2,001 characters, at most 2,000 allowed",
        ),
    ]
    for path, fields, message in cases:
        resp = ada.client.post(path, data=form(ada, **fields), follow_redirects=True)
        assert message in resp.get_data(as_text=True), path
    assert count(sessions, BankEntry) == 0
    with sessions() as s:
        assert [b.name for b in banks.list_banks(s)] == ["helpline"]


def test_bank_imports_and_entries_refuse_long_notes():
    with pytest.raises(text_limits.TextTooLong, match="note is too long"):
        make_entry("md5", MD5, note="n" * 2001)
    assert make_entry("md5", MD5, note="n" * 2000).note == "n" * 2000
    errors: list[str] = []
    rows = f"signal,value,note\nmd5,{MD5},{'n' * 2001}\n"
    assert list(read_entries(io.StringIO(rows), "csv", errors=errors)) == []
    assert errors == [f"line 2: {NOTE_LIMIT_MESSAGE}"]


def test_a_legal_hold_reason_is_bounded(sessions):
    with sessions() as s, pytest.raises(text_limits.TextTooLong, match="reason is too long"):
        evidence.set_hold(s, 1, True, "r" * 2001, "ada")
    assert count(sessions, AuditRecord) == 0


def _user_id(sessions: Any, username: str) -> int:
    with sessions() as s:
        return int(s.scalar(select(User.id).where(User.username == username)))
