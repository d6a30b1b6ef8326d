"""Decision policy through the console's API and pages: configured reasons and
their pairing rules, the restricted queue for suspected minors, four eyes.
Decisions are captured by an in-memory sender instead of Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from moderation.storage import banks
from moderation.storage.models import BankEntry, ExchangeFeedback, ItemExclusion
from tests.support.reviewers import World, add_item


@pytest.fixture
def world(db_url, sessions):
    return World(db_url, sessions)


@pytest.fixture
def four_eyes(db_url, sessions):
    return World(db_url, sessions, four_eyes_removals=True)


# -- reasons -------------------------------------------------------------------------------
def test_configured_reasons_replace_the_built_in_list(db_url, sessions):
    w = World(db_url, sessions, policy_reasons="ncii=Intimate image without consent;spam=Spam or scam")
    add_item(sessions)
    mo = w.reviewer("mo")
    listed = mo.client.get("/api/v1/reasons").get_json()["reasons"]
    assert listed == [
        {"code": "ncii", "label": "Intimate image without consent"},
        {"code": "spam", "label": "Spam or scam"},
    ]
    item_id = mo.claim()
    page = mo.page(item_id)
    assert "Spam or scam" in page and 'value="adult_nudity"' not in page
    refused = mo.decide(item_id, "allow", "not_violating")  # a built-in code, not configured here
    assert refused.status_code == 400 and "ncii, spam" in refused.get_json()["error"]
    # A code outside the built-in set goes with any action.
    assert mo.decide(item_id, "allow", "spam").status_code == 201
    assert [d["reason"] for d in w.sent] == ["spam"]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("remove", "not_violating"),
        ("escalate", "not_violating"),
        ("allow", "ncii"),
        ("allow", "adult_nudity"),
        ("allow", "unclear"),
        ("remove", "unclear"),
        ("allow", "suspected_minor"),
        ("remove", "suspected_minor"),
        ("remove", ""),
    ],
)
def test_a_reason_that_does_not_fit_the_action_is_refused(world, sessions, action, reason):
    add_item(sessions)
    mo = world.reviewer("mo")
    item_id = mo.claim()
    resp = mo.decide(item_id, action, reason)
    assert resp.status_code == 400, resp.get_json()
    assert world.sent == [] and world.item(item_id).state == "claimed"


def test_the_console_form_shows_the_refusal_and_keeps_the_claim(world, sessions):
    add_item(sessions)
    mo = world.reviewer("mo")
    item_id = mo.claim()
    resp = mo.client.post(
        f"/items/{item_id}/decide",
        data={"csrf_token": mo.csrf, "action": "remove", "reason": "not_violating"},
        follow_redirects=True,
    )
    assert "goes with allow, not remove" in resp.get_data(as_text=True)
    assert world.sent == [] and world.item(item_id).state == "claimed"


# -- suspected minor: the restricted queue ---------------------------------------------------
def _stopncii_match(sessions: Any) -> list[dict[str, Any]]:
    """A match against a StopNCII-sourced entry, so a decision owes the exchange feedback."""
    with sessions() as s:
        bank = banks.create_bank(s, "stopncii", "review", actor="test", source="stopncii")
        entry = BankEntry(
            bank_id=bank.id,
            signal="md5",
            value="9" * 32,
            digest=banks.digest("md5", "9" * 32),
            source_ref="h-1",
        )
        s.add(entry)
        s.commit()
        return [
            {
                "bank": "stopncii",
                "bank_action": "review",
                "entry_id": entry.id,
                "signal": "md5",
                "distance": 0,
            }
        ]


def test_suspected_minor_goes_to_admins_and_never_banks(four_eyes, sessions):
    w = four_eyes
    item_id = add_item(sessions, matches=_stopncii_match(sessions))
    mo, sen, ada = w.reviewer("mo"), w.reviewer("sen"), w.reviewer("ada")
    assert mo.claim() == item_id
    resp = mo.decide(item_id, "escalate", "suspected_minor")
    assert resp.status_code == 201
    assert resp.get_json()["restricted"] is True and resp.get_json()["action"] == "escalate"
    assert w.item(item_id).tier == "restricted"
    assert sen.claim() is None  # seniors never see the restricted queue
    assert sen.client.get(f"/items/{item_id}").status_code == 404  # as if there were no such item
    assert ada.claim() == item_id
    done = ada.decide(item_id, "remove", "suspected_minor")
    assert done.status_code == 201  # decided at once: nothing in the restricted queue banks, so no four eyes
    payload = done.get_json()
    assert (payload["action"], payload["restricted"], payload["banked"], payload["banked_hashes"]) == (
        "remove",
        True,
        0,
        0,
    )
    assert w.confirmed_entries() == []
    with sessions() as s:
        assert s.scalars(select(ExchangeFeedback)).all() == []  # no Blocked report to the exchange
    assert [(d["action"], d["restricted"]) for d in w.sent] == [("escalate", True), ("remove", True)]


def test_an_unrestricted_removal_banks_and_reports_to_the_exchange(world, sessions):
    # The control for the test above: the same item, removed in the moderator tier.
    item_id = add_item(sessions, matches=_stopncii_match(sessions))
    mo = world.reviewer("mo")
    assert mo.claim() == item_id
    payload = mo.decide(item_id, "remove", "ncii").get_json()
    assert (payload["restricted"], payload["banked"], payload["banked_hashes"]) == (False, 3, 3)
    assert {e.signal for e in world.confirmed_entries()} == {"sha256", "md5", "pdq"}
    with sessions() as s:
        assert [f.blocked for f in s.scalars(select(ExchangeFeedback))] == [True]
    assert "second_moderator" not in payload  # four eyes is off


def test_a_senior_sends_a_suspected_minor_on_to_the_restricted_queue(world, sessions):
    item_id = add_item(sessions)
    mo, sen = world.reviewer("mo"), world.reviewer("sen")
    assert mo.claim() == item_id
    assert mo.decide(item_id, "escalate", "unclear").status_code == 201
    assert world.item(item_id).tier == "senior"
    assert sen.claim() == item_id
    assert sen.decide(item_id, "escalate", "unclear").status_code == 400  # already escalated
    assert sen.decide(item_id, "escalate", "suspected_minor").status_code == 201
    assert world.item(item_id).tier == "restricted"
    ada = world.reviewer("ada")
    assert ada.claim() == item_id
    assert ada.decide(item_id, "escalate", "suspected_minor").status_code == 400  # nowhere further
    assert ada.decide(item_id, "allow", "not_violating").get_json()["restricted"] is True


def test_a_senior_decides_an_escalated_item(world, sessions):
    item_id = add_item(sessions)
    mo, sen = world.reviewer("mo"), world.reviewer("sen")
    assert mo.claim() == item_id
    mo.decide(item_id, "escalate", "unclear")
    assert mo.claim() is None  # moderators do not work the senior tier
    assert sen.claim() == item_id
    page = sen.page(item_id)
    assert 'value="escalate"' in page  # still offered: a suspected minor goes on to admins
    payload = sen.decide(item_id, "remove", "ncii").get_json()
    assert (payload["moderator"], payload["banked"]) == ("sen", 3)


# -- four eyes -------------------------------------------------------------------------------
def test_with_four_eyes_off_a_removal_is_final_at_once(world, sessions):
    item_id = add_item(sessions)
    mo = world.reviewer("mo")
    assert mo.claim() == item_id
    assert mo.decide(item_id, "remove", "ncii").status_code == 201
    assert world.item(item_id).state == "decided" and len(world.sent) == 1


def test_four_eyes_a_second_moderator_confirms_the_removal(four_eyes, sessions):
    w = four_eyes
    item_id = add_item(sessions)
    mo, lou = w.reviewer("mo"), w.reviewer("lou")
    assert mo.claim() == item_id
    first = mo.decide(item_id, "remove", "ncii", note="matches the report")
    assert first.status_code == 202
    assert first.get_json() == {
        "outcome": "first_review",
        "item_id": item_id,
        "state": "pending",
        "tier": "second_review",
    }
    held = w.item(item_id)
    assert held.first_review is not None
    assert (held.first_review["moderator"], held.first_review["reason"]) == ("mo", "ncii")
    assert w.sent == [] and w.confirmed_entries() == []  # nothing published, nothing banked yet
    assert [r.details["reason"] for r in w.audit("decision.first_review")] == ["ncii"]
    with sessions() as s:
        assert s.get(ItemExclusion, (item_id, held.first_review["user_id"])).why == "first_review"

    assert mo.claim() is None  # the first reviewer is never served it again
    assert lou.claim() == item_id
    page = lou.page(item_id)
    assert "Second review" in page and "<strong>mo</strong> removed it as" in page
    assert "matches the report" in page
    assert 'value="ncii" data-key="1" checked' in page  # the first reviewer's reason, preselected
    confirmed = lou.decide(item_id, "remove", "ncii")
    assert confirmed.status_code == 201
    payload = confirmed.get_json()
    assert (payload["moderator"], payload["second_moderator"], payload["first_reason"]) == (
        "mo",
        "lou",
        "ncii",
    )
    assert payload["banked"] == 3 and len(w.confirmed_entries()) == 3
    assert [d["idempotency_key"] for d in w.sent] == [payload["idempotency_key"]]
    assert w.item(item_id).state == "decided" and w.item(item_id).first_review is None


def test_four_eyes_the_first_reviewer_cannot_confirm_their_own_removal(four_eyes, sessions):
    w = four_eyes
    item_id = add_item(sessions)
    mo = w.reviewer("mo")
    assert mo.claim() == item_id
    assert mo.decide(item_id, "remove", "ncii").status_code == 202
    # Even holding a claim (an admin tool, a race with the exclusion), decide refuses.
    w.force_claim(item_id, "mo")
    for action, reason in (("remove", "ncii"), ("allow", "not_violating")):
        resp = mo.decide(item_id, action, reason)
        assert resp.status_code == 403 and "first review" in resp.get_json()["error"]
    assert w.sent == [] and w.item(item_id).tier == "second_review"


def test_four_eyes_disagreement_goes_to_a_senior_with_both_opinions(four_eyes, sessions):
    w = four_eyes
    item_id = add_item(sessions)
    mo, lou, sen = w.reviewer("mo"), w.reviewer("lou"), w.reviewer("sen")
    assert mo.claim() == item_id
    mo.decide(item_id, "remove", "adult_nudity")
    assert lou.claim() == item_id
    resp = lou.decide(item_id, "allow", "not_violating", note="adult, consenting, posted by herself")
    assert resp.status_code == 202 and resp.get_json()["outcome"] == "disagreement"
    assert w.sent == [] and w.confirmed_entries() == []
    assert w.item(item_id).tier == "senior" and w.item(item_id).state == "pending"
    (record,) = w.audit("decision.disagreement")
    assert record.actor == "lou"
    assert (record.details["first_moderator"], record.details["first_reason"]) == ("mo", "adult_nudity")
    assert (record.details["second_action"], record.details["second_reason"]) == ("allow", "not_violating")

    assert lou.claim() is None
    w.force_claim(item_id, "lou")
    refused = lou.decide(item_id, "allow", "not_violating")
    assert refused.status_code == 403 and "a senior must decide it" in refused.get_json()["error"]
    lou.client.post(f"/api/v1/items/{item_id}/release", json={}, headers=lou.headers)
    assert sen.claim() == item_id
    page = sen.page(item_id)
    assert "the reviewers disagree" in page and "adult, consenting, posted by herself" in page
    final = sen.decide(item_id, "allow", "not_violating").get_json()
    assert (final["action"], final["moderator"], final["banked"]) == ("allow", "sen", 0)
    assert "second_moderator" not in final and w.confirmed_entries() == []


def test_four_eyes_a_senior_can_side_with_the_first_reviewer(four_eyes, sessions):
    w = four_eyes
    item_id = add_item(sessions)
    mo, lou, sen = w.reviewer("mo"), w.reviewer("lou"), w.reviewer("sen")
    assert mo.claim() == item_id
    mo.decide(item_id, "remove", "ncii")
    assert lou.claim() == item_id
    lou.decide(item_id, "allow", "not_violating")
    assert sen.claim() == item_id
    final = sen.decide(item_id, "remove", "ncii").get_json()
    assert (final["moderator"], final["second_moderator"], final["banked"]) == ("mo", "sen", 3)


def test_four_eyes_only_holds_removals_that_would_add_hashes(four_eyes, sessions):
    w = four_eyes
    first = add_item(sessions, 1)
    copy = add_item(sessions, 2, sha256=f"{1:064x}", md5=f"{1:032x}")  # the same picture again
    mo, lou = w.reviewer("mo"), w.reviewer("lou")
    assert mo.claim() == first
    assert mo.decide(first, "remove", "ncii").status_code == 202
    assert lou.claim() == first  # second reviews come first in a moderator's queue
    assert lou.decide(first, "remove", "ncii").status_code == 201
    assert mo.claim() == copy
    # Every hash of the copy is already in the confirmed bank: nothing to guard, final at once.
    payload = mo.decide(copy, "remove", "ncii").get_json()
    assert (payload["action"], payload["banked"], payload["moderator"]) == ("remove", 0, "mo")
    assert "second_moderator" not in payload and len(w.confirmed_entries()) == 3
