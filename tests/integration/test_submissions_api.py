"""Hash submissions by helplines and trusted flaggers (/api/v1/submissions):
authorization, idempotent submit, match status, withdrawal, and that a token
never sees or touches another bank's entries."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from moderation.domain import EntrySpec
from moderation.storage.models import BankEntry
from tests.integration.test_banks_api import (
    MD5,
    PDQ,
    SHA,
    add_hashes,
    basic,
    bearer,
    make_bank,
    make_token,
    record_hits,
    web_app,
)
from tests.support.web import add_user

HASHES = [{"signal": "md5", "value": MD5}, {"signal": "pdq", "value": PDQ}]


@pytest.fixture
def setup(db_url, sessions):
    """Two banks, each with a trusted flagger's submission token."""
    make_bank(sessions, "helpline", "auto_remove")
    make_bank(sessions, "ngo", "review_high")
    helpline = bearer(make_token(sessions, "helpline", ["hashes:submit"], bank="helpline"))
    ngo = bearer(make_token(sessions, "ngo", ["hashes:submit"], bank="ngo"))
    client = web_app(db_url).test_client()

    def send(headers: dict[str, str], method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return client.open(path, method=method, headers=headers, json=body, **kw)

    return send, helpline, ngo


def _entries(sessions: Any) -> list[tuple[int, str, str, str, str]]:
    with sessions() as s:
        rows = s.scalars(select(BankEntry).order_by(BankEntry.id))
        return [(e.bank_id, e.signal, e.case_id, e.status, e.added_by) for e in rows]


# Who may submit, read and withdraw: test_authz_matrix.py.


def test_an_admin_must_name_the_bank(db_url, sessions):
    make_bank(sessions, "helpline")
    headers = basic("ada", add_user(sessions, "ada", role="admin"))
    c = web_app(db_url).test_client()
    resp = c.post("/api/v1/submissions", json={"case_id": "c", "hashes": HASHES}, headers=headers)
    assert resp.status_code == 400 and "?bank=" in resp.get_json()["error"]
    resp = c.post("/api/v1/submissions?bank=nope", json={"case_id": "c", "hashes": HASHES}, headers=headers)
    assert resp.status_code == 404


def test_submit_is_idempotent_and_lands_in_the_tokens_bank(setup, sessions):
    send, helpline, _ = setup
    body = {"case_id": "HL-42", "hashes": HASHES, "note": "reported by victim"}
    resp = send(helpline, "POST", "/api/v1/submissions", body)
    assert resp.status_code == 201, resp.get_json()
    first = resp.get_json()
    assert first["case_id"] == "HL-42" and first["added"] == 2 and first["existing"] == 0
    assert len(first["entry_ids"]) == 2
    again = send(helpline, "POST", "/api/v1/submissions", body).get_json()
    assert (again["added"], again["existing"], again["entry_ids"]) == (0, 2, first["entry_ids"])
    rows = _entries(sessions)
    assert len(rows) == 2
    assert {(r[2], r[3], r[4]) for r in rows} == {("HL-42", "active", "token:helpline")}
    with sessions() as s:
        notes = {e.note for e in s.scalars(select(BankEntry))}
    assert notes == {"reported by victim"}


def test_status_shows_matches_and_withdraw_stops_them(setup, sessions):
    send, helpline, _ = setup
    ids = send(helpline, "POST", "/api/v1/submissions", {"case_id": "HL-1", "hashes": HASHES}).get_json()[
        "entry_ids"
    ]
    status = send(helpline, "GET", "/api/v1/submissions/HL-1").get_json()
    assert status["case_id"] == "HL-1"
    assert [(e["id"], e["status"], e["matched"], e["match_count"]) for e in status["entries"]] == [
        (ids[0], "active", False, 0),
        (ids[1], "active", False, 0),
    ]
    assert set(status["entries"][0]) == {
        "id",
        "signal",
        "status",
        "matched",
        "match_count",
        "last_matched_at",
    }

    record_hits(sessions, ids[1], times=2)
    entries = send(helpline, "GET", "/api/v1/submissions/HL-1").get_json()["entries"]
    assert entries[0]["matched"] is False and entries[0]["last_matched_at"] is None
    assert entries[1]["matched"] is True and entries[1]["match_count"] == 2 and entries[1]["last_matched_at"]

    resp = send(helpline, "POST", "/api/v1/submissions/HL-1/withdraw", {"reason": "victim request"})
    assert resp.status_code == 200 and resp.get_json() == {"case_id": "HL-1", "withdrawn": 2, "entries": 2}
    entries = send(helpline, "GET", "/api/v1/submissions/HL-1").get_json()["entries"]
    assert {e["status"] for e in entries} == {"withdrawn"}
    # Withdrawing again changes nothing; a body is optional.
    resp = send(
        helpline, "POST", "/api/v1/submissions/HL-1/withdraw", data="", content_type="application/json"
    )
    assert resp.get_json()["withdrawn"] == 0
    with sessions() as s:
        reasons = {(e.status_reason, e.status_changed_by) for e in s.scalars(select(BankEntry))}
    assert reasons == {("victim request", "token:helpline")}


def test_unknown_case_is_404(setup):
    send, helpline, _ = setup
    assert send(helpline, "GET", "/api/v1/submissions/nothing").status_code == 404
    assert send(helpline, "POST", "/api/v1/submissions/nothing/withdraw", {}).status_code == 404


def test_a_token_never_sees_or_touches_another_banks_entries(setup, sessions):
    send, helpline, ngo = setup
    # The same case id in both banks, and a helpline-only case.
    send(helpline, "POST", "/api/v1/submissions", {"case_id": "shared", "hashes": HASHES})
    send(
        ngo,
        "POST",
        "/api/v1/submissions",
        {"case_id": "shared", "hashes": [{"signal": "sha256", "value": SHA}]},
    )
    send(
        helpline,
        "POST",
        "/api/v1/submissions",
        {"case_id": "hl-only", "hashes": [{"signal": "sha256", "value": SHA}]},
    )
    # A hash the platform banked itself under the same case id, in a third bank.
    make_bank(sessions, "confirmed")
    add_hashes(sessions, "confirmed", EntrySpec("sha256", SHA, case_id="hl-only"))

    ngo_view = send(ngo, "GET", "/api/v1/submissions/shared").get_json()["entries"]
    assert [e["signal"] for e in ngo_view] == ["sha256"]
    assert send(ngo, "GET", "/api/v1/submissions/hl-only").status_code == 404
    assert send(ngo, "POST", "/api/v1/submissions/hl-only/withdraw", {}).status_code == 404
    # Asking for another bank explicitly is refused, whatever the case.
    assert send(ngo, "GET", "/api/v1/submissions/hl-only?bank=helpline").status_code == 403
    resp = send(ngo, "POST", "/api/v1/submissions?bank=helpline", {"case_id": "x", "hashes": HASHES})
    assert resp.status_code == 403
    # Nor can a submission token use the bank API.
    assert send(ngo, "GET", "/api/v1/banks/helpline/entries").status_code == 403
    assert send(ngo, "GET", "/api/v1/banks").status_code == 403

    withdrawn = send(ngo, "POST", "/api/v1/submissions/shared/withdraw", {}).get_json()
    assert withdrawn["withdrawn"] == 1
    helpline_view = send(helpline, "GET", "/api/v1/submissions/shared").get_json()["entries"]
    assert len(helpline_view) == 2 and {e["status"] for e in helpline_view} == {"active"}
    hl_only = send(helpline, "GET", "/api/v1/submissions/hl-only").get_json()["entries"]
    assert len(hl_only) == 1  # not the confirmed bank's entry with the same case id
    with sessions() as s:
        statuses = sorted((e.case_id, e.status) for e in s.scalars(select(BankEntry)))
    assert statuses == [
        ("hl-only", "active"),
        ("hl-only", "active"),
        ("shared", "active"),
        ("shared", "active"),
        ("shared", "withdrawn"),
    ]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"hashes": HASHES}, "case_id is required"),
        ({"case_id": "", "hashes": HASHES}, "case_id is required"),
        ({"case_id": "a/b", "hashes": HASHES}, "without '/'"),
        ({"case_id": "   ", "hashes": HASHES}, "case_id"),
        ({"case_id": 7, "hashes": HASHES}, "case_id must be a string"),
        ({"case_id": "x" * 201, "hashes": HASHES}, "too long"),
        ({"case_id": "c"}, "hashes must be a non-empty list"),
        ({"case_id": "c", "hashes": []}, "hashes must be a non-empty list"),
        ({"case_id": "c", "hashes": [{"signal": "md5", "value": "nope"}]}, "hashes[0]: md5 value"),
        ({"case_id": "c", "hashes": [{"signal": "md5", "value": MD5, "image": "base64..."}]}, "never images"),
        ({"case_id": "c", "hashes": HASHES, "image": "base64..."}, "unexpected field 'image'"),
        ({"case_id": "c", "hashes": HASHES, "note": ["x"]}, "note must be a string"),
    ],
)
def test_bad_submissions_are_refused_with_a_reason(setup, sessions, body, fragment):
    send, helpline, _ = setup
    resp = send(helpline, "POST", "/api/v1/submissions", body)
    assert resp.status_code == 400
    assert fragment in resp.get_json()["error"]
    assert _entries(sessions) == []


def test_submissions_must_be_json(setup, sessions):
    send, helpline, _ = setup
    resp = send(helpline, "POST", "/api/v1/submissions", data={"case_id": "c"})
    assert resp.status_code == 415
    resp = send(helpline, "POST", "/api/v1/submissions", data="{oops", content_type="application/json")
    assert resp.status_code == 400 and "JSON" in resp.get_json()["error"]
    assert _entries(sessions) == []


def test_a_case_id_with_surrounding_spaces_is_the_same_case(setup):
    send, helpline, _ = setup
    assert (
        send(helpline, "POST", "/api/v1/submissions", {"case_id": " HL-7 ", "hashes": HASHES}).status_code
        == 201
    )
    assert send(helpline, "GET", "/api/v1/submissions/HL-7").status_code == 200
    resp = send(helpline, "POST", "/api/v1/submissions/%20HL-7/withdraw", {})
    assert resp.status_code == 200 and resp.get_json()["withdrawn"] == 2
