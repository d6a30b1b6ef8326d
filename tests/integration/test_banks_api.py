"""The hash bank JSON API (/api/v1/banks): who may call what, bank CRUD, entries,
search and pagination, lifecycle and flood-control quarantine, against a real
PostgreSQL. No broker: the web app needs none for banks."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from moderation.config import load_settings
from moderation.domain import BankAction, EntrySpec, Match
from moderation.storage import banks, flood, tokens, users
from moderation.storage.models import AuditRecord, BankEntry, utcnow
from tests.support.factories import make_item
from tests.support.web import add_user, login, make_app

MD5 = "0123456789abcdef0123456789abcdef"
SHA = "ab" * 32
PDQ = "f" * 64


# -- helpers shared with the submissions and admin page tests --------------------------
def web_app(db_url: str) -> Any:
    return make_app(load_settings({}, database_url=db_url, secret_key="test-secret", dev_mode=True))


def make_bank(sessions: Any, name: str, action: str = "review") -> None:
    with sessions() as s:
        banks.create_bank(s, name, action, actor="test")
        s.commit()


def add_hashes(sessions: Any, bank: str, *specs: Any) -> list[int]:
    with sessions() as s:
        result = banks.add_entries(s, banks.get_bank(s, bank), list(specs), added_by="test")
        s.commit()
        return result.ids


def make_token(sessions: Any, name: str, scopes: list[str], bank: str | None = None) -> str:
    with sessions() as s:
        secret = tokens.create_token(s, name, scopes, bank=bank, created_by="test")
        s.commit()
    return secret


def revoked_token(sessions: Any, name: str, scopes: list[str], bank: str | None = None) -> str:
    secret = make_token(sessions, name, scopes, bank)
    with sessions() as s:
        tokens.revoke_token(s, name, actor="test")
        s.commit()
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def record_hits(sessions: Any, entry_id: int, times: int = 1, max_hits: int = 100) -> None:
    with sessions() as s:
        entry = s.get(BankEntry, entry_id)
        assert entry is not None
        match = Match("x", BankAction.REVIEW, entry_id, entry.signal, 0)
        for _ in range(times):
            flood.record_matches(s, [match], flood.FloodPolicy(max_hits=max_hits))
        s.commit()


# The authorization matrix of every route, these included: test_authz_matrix.py.


def test_cookie_sessions_need_the_csrf_header_on_writes(db_url, sessions):
    make_bank(sessions, "alpha")
    pw = add_user(sessions, "ada", role="admin")
    c = web_app(db_url).test_client()
    csrf = login(c, "ada", pw)
    assert c.get("/api/v1/banks").status_code == 200
    resp = c.patch("/api/v1/banks/alpha", json={"description": "x"})
    assert resp.status_code == 400 and "CSRF" in resp.get_json()["error"]
    resp = c.patch("/api/v1/banks/alpha", json={"description": "x"}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 200 and resp.get_json()["description"] == "x"


def test_moderators_see_the_matches_of_their_item_but_never_the_banks(db_url, sessions):
    """Bank entries carry victims' case references and notes: a moderator reads no
    bank, however they authenticate; their item shows its matches without them."""
    make_bank(sessions, "alpha")
    spec = EntrySpec("md5", MD5, case_id="victim-case-7", note="note-77")
    (entry_id,) = add_hashes(sessions, "alpha", spec)
    pw = add_user(sessions, "mo")
    with sessions() as s:
        match = Match("alpha", BankAction.REVIEW, entry_id, "md5", 0)
        item = make_item(1, md5=MD5, matches=[match.as_dict()])
        s.add(item)
        s.flush()
        mo = users.get_user(s, "mo")
        item.state, item.claimed_by, item.lease_expires_at = "claimed", mo.id, utcnow() + timedelta(minutes=5)
        token = tokens.create_token(s, "mo/script", [tokens.REVIEW], created_by="test", user=mo)
        s.commit()
    c = web_app(db_url).test_client()
    csrf = login(c, "mo", pw)
    paths = ["/api/v1/banks", "/api/v1/banks/alpha", "/api/v1/banks/alpha/entries"]
    paths += [f"/api/v1/banks/alpha/entries/{entry_id}", "/api/v1/banks/quarantined"]
    for headers in ({}, basic("mo", pw), bearer(token)):
        for path in paths:
            resp = c.get(path, headers=headers)
            assert resp.status_code == 403, (path, headers)
            assert "victim-case-7" not in resp.get_data(as_text=True)
    resp = c.patch("/api/v1/banks/alpha", json={"enabled": False}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 403
    # What a moderator needs of the matches is on the item itself: bank, action, signal, distance.
    for headers in ({}, bearer(token)):
        resp = c.get("/api/v1/items/1", headers=headers)
        assert resp.status_code == 200
        (match,) = resp.get_json()["matches"]
        assert match == {
            "bank": "alpha",
            "bank_action": "review",
            "entry_id": entry_id,
            "signal": "md5",
            "distance": 0,
            "variant": "original",
        }
        body = resp.get_data(as_text=True)
        assert "victim-case-7" not in body and "note-77" not in body
    page = c.get("/items/1").get_data(as_text=True)
    assert "Bank matches" in page and "alpha" in page
    assert "victim-case-7" not in page and "note-77" not in page


def test_a_bearer_header_overrides_the_session_cookie(db_url, sessions):
    make_bank(sessions, "alpha")
    pw = add_user(sessions, "ada", role="admin")
    reader = make_token(sessions, "reader", ["banks:read"])
    c = web_app(db_url).test_client()
    csrf = login(c, "ada", pw)
    headers = {**bearer(reader), "X-CSRF-Token": csrf}
    assert c.patch("/api/v1/banks/alpha", json={"enabled": False}, headers=headers).status_code == 403
    assert c.get("/api/v1/banks/alpha", headers=bearer("mod_wrong")).status_code == 401


def test_token_writes_must_be_json_and_need_no_csrf(db_url, sessions):
    make_bank(sessions, "alpha")
    writer = make_token(sessions, "writer", ["banks:write"])
    c = web_app(db_url).test_client()
    resp = c.patch("/api/v1/banks/alpha", data={"description": "x"}, headers=bearer(writer))
    assert resp.status_code == 415
    assert (
        c.patch("/api/v1/banks/alpha", json={"description": "x"}, headers=bearer(writer)).status_code == 200
    )


def test_service_tokens_do_not_open_the_queue_api(db_url, sessions):
    # The review queue acts as a user: only personal tokens (scope review) open it.
    secret = make_token(sessions, "writer", ["banks:read", "banks:write"])
    c = web_app(db_url).test_client()
    resp = c.get("/api/v1/me", headers=bearer(secret))
    assert resp.status_code == 403 and "review" in resp.get_json()["error"]
    assert c.post("/api/v1/queue/claim", json={}, headers=bearer(secret)).status_code == 403
    assert c.get("/api/v1/me", headers=bearer("mod_unknown")).status_code == 401


def test_token_use_is_recorded_and_audited_as_the_token(db_url, sessions):
    make_bank(sessions, "alpha")
    writer = make_token(sessions, "writer", ["banks:write"])
    c = web_app(db_url).test_client()
    resp = c.post(
        "/api/v1/banks/alpha/entries",
        json={"entries": [{"signal": "md5", "value": MD5}]},
        headers=bearer(writer),
    )
    assert resp.status_code == 201
    with sessions() as s:
        (token,) = tokens.list_tokens(s)
        assert token.last_used_at is not None
        entry = s.scalar(select(BankEntry))
        assert entry is not None and entry.added_by == "token:writer"
    c.patch("/api/v1/banks/alpha", json={"enabled": False}, headers=bearer(writer))
    with sessions() as s:
        actors = {a.actor for a in s.scalars(select(AuditRecord).where(AuditRecord.action == "bank.update"))}
    assert actors == {"token:writer"}


# -- banks ---------------------------------------------------------------------------
@pytest.fixture
def admin(db_url, sessions):
    """An admin's API calls through a console session (quicker than HTTP Basic,
    which checks the password hash on every request)."""
    pw = add_user(sessions, "ada", role="admin")
    client = web_app(db_url).test_client()
    headers = {"X-CSRF-Token": login(client, "ada", pw)}

    def send(method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return client.open(path, method=method, headers=headers, json=body, **kw)

    return send


def test_bank_create_read_update_list(admin):
    resp = admin(
        "POST",
        "/api/v1/banks",
        {
            "name": "helpline",
            "action": "auto_remove",
            "description": "d",
            "pdq_distance": 20,
            "vpdq_share": 1,
        },
    )
    assert resp.status_code == 201, resp.get_json()
    bank = resp.get_json()
    assert bank["name"] == "helpline" and bank["action"] == "auto_remove" and bank["pdq_distance"] == 20
    assert bank["vpdq_share"] == 1.0 and bank["enabled"] is True and bank["source"] == "local"
    assert bank["stats"] == {"active": 0, "quarantined": 0, "disabled": 0, "withdrawn": 0, "matches": 0}

    resp = admin("PATCH", "/api/v1/banks/helpline", {"action": "review", "enabled": False, "pdq_distance": 0})
    assert resp.status_code == 200
    assert admin("GET", "/api/v1/banks/helpline").get_json() | {"updated_at": None} == resp.get_json() | {
        "updated_at": None
    }
    got = admin("GET", "/api/v1/banks/helpline").get_json()
    assert (got["action"], got["enabled"], got["pdq_distance"]) == ("review", False, 0)

    admin("POST", "/api/v1/banks", {"name": "allow-list", "action": "allow"})
    listed = admin("GET", "/api/v1/banks").get_json()["banks"]
    assert [b["name"] for b in listed] == ["allow-list", "helpline"]
    assert all("stats" in b for b in listed)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"name": "a", "action": "review"}, 409, "already exists"),
        ({"action": "review"}, 400, "name is required"),
        ({"name": "b"}, 400, "action is required"),
        ({"name": "b", "action": "delete"}, 400, "unknown action"),
        ({"name": "B!", "action": "review"}, 400, "bank name"),
        ({"name": "b", "action": "review", "pdq_distance": 40}, 400, "pdq_distance"),
        ({"name": "b", "action": "review", "pdq_distance": "5"}, 400, "pdq_distance"),
        ({"name": "b", "action": "review", "pdq_distance": True}, 400, "pdq_distance"),
        ({"name": "b", "action": "review", "vpdq_share": 0}, 400, "vpdq_share"),
        ({"name": "b", "action": "review", "vpdq_share": "all"}, 400, "vpdq_share"),
        ({"name": "b", "action": 7}, 400, "action must be a string"),
        ({"name": "b", "action": "review", "source": "stopncii"}, 400, "unexpected field 'source'"),
        ({"name": "quarantined", "action": "review"}, 400, "reserved"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bank_create_rejects_bad_input_clearly(admin, body, status, fragment):
    assert admin("POST", "/api/v1/banks", {"name": "a", "action": "review"}).status_code == 201
    resp = admin("POST", "/api/v1/banks", body)
    assert resp.status_code == status
    assert fragment in resp.get_json()["error"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "nothing to change"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"name": "renamed"}, "unexpected field 'name'"),
        ({"pdq_distance": -1}, "pdq_distance"),
        ({"action": "nuke"}, "unknown action"),
    ],
)
def test_bank_update_rejects_bad_input(admin, sessions, body, fragment):
    make_bank(sessions, "alpha")
    resp = admin("PATCH", "/api/v1/banks/alpha", body)
    assert resp.status_code == 400 and fragment in resp.get_json()["error"]
    assert admin("GET", "/api/v1/banks/alpha").get_json()["action"] == "review"


def test_invalid_json_is_a_400_not_a_500(admin, sessions):
    make_bank(sessions, "alpha")
    for path in ("/api/v1/banks", "/api/v1/banks/alpha/entries"):
        resp = admin("POST", path, data="{not json", content_type="application/json")
        assert resp.status_code == 400 and "JSON object" in resp.get_json()["error"]
    resp = admin("PATCH", "/api/v1/banks/alpha", data=b"\xff\xfe", content_type="application/json")
    assert resp.status_code == 400


def test_unknown_bank_and_entry_are_404(admin, sessions):
    make_bank(sessions, "alpha")
    make_bank(sessions, "beta")
    (other,) = add_hashes(sessions, "beta", EntrySpec("md5", MD5))
    assert admin("GET", "/api/v1/banks/nope").status_code == 404
    assert admin("PATCH", "/api/v1/banks/nope", {"enabled": False}).status_code == 404
    assert admin("GET", "/api/v1/banks/nope/entries").status_code == 404
    assert admin("GET", "/api/v1/banks/alpha/entries/999999").status_code == 404
    # An entry of another bank is not found through this one.
    assert admin("GET", f"/api/v1/banks/alpha/entries/{other}").status_code == 404
    assert admin("POST", f"/api/v1/banks/alpha/entries/{other}/withdraw", {}).status_code == 404
    assert admin("GET", f"/api/v1/banks/beta/entries/{other}").status_code == 200


# -- entries -------------------------------------------------------------------------
def test_add_entries_is_idempotent_and_normalises(admin, sessions):
    make_bank(sessions, "alpha")
    body = {
        "entries": [
            {"signal": "md5", "value": MD5.upper(), "case_id": "c1", "note": "n"},
            {"signal": "sha256", "value": SHA, "source_ref": "ex-1"},
        ]
    }
    resp = admin("POST", "/api/v1/banks/alpha/entries", body)
    assert resp.status_code == 201
    first = resp.get_json()
    assert first["added"] == 2 and first["existing"] == 0 and len(first["ids"]) == 2
    again = admin("POST", "/api/v1/banks/alpha/entries", body).get_json()
    assert again == {"added": 0, "existing": 2, "ids": []}
    entry = admin("GET", f"/api/v1/banks/alpha/entries/{first['ids'][0]}").get_json()
    assert entry["value"] == MD5 and entry["case_id"] == "c1" and entry["added_by"] == "ada"
    assert entry["status"] == "active" and entry["hits"] == [] and entry["match_count"] == 0
    assert admin("GET", "/api/v1/banks/alpha").get_json()["stats"]["active"] == 2


@pytest.mark.parametrize(
    "entries, fragment",
    [
        ([{"signal": "md5", "value": MD5}, {"signal": "md5", "value": "xyz"}], "entries[1]: md5 value"),
        ([{"signal": "md4", "value": MD5}], "entries[0]: unknown signal"),
        ([{"signal": "md5"}], "entries[0]: value is required"),
        ([{"signal": "md5", "value": 5}], "value must be a string"),
        ([{"signal": "md5", "value": MD5, "image": "data:"}], "unexpected field 'image'"),
        (["md5 " + MD5], "entries[0]: expected an object"),
        ([], "non-empty list"),
        ("md5", "non-empty list"),
        ([{"signal": "md5", "value": MD5, "note": "x" * 2001}], "note is too long"),
    ],
)
def test_add_entries_rejects_the_whole_request_on_a_bad_entry(admin, sessions, entries, fragment):
    make_bank(sessions, "alpha")
    resp = admin("POST", "/api/v1/banks/alpha/entries", {"entries": entries})
    assert resp.status_code == 400
    assert fragment in resp.get_json()["error"]
    assert admin("GET", "/api/v1/banks/alpha").get_json()["stats"]["active"] == 0


def test_search_filters_and_pagination(admin, sessions):
    make_bank(sessions, "alpha")
    ids = add_hashes(
        sessions,
        "alpha",
        *[EntrySpec("md5", f"{n:032x}", case_id=f"case-{n % 2}") for n in range(5)],
        EntrySpec("pdq", PDQ, source_ref="ref-9"),
    )

    def page(query: str) -> Any:
        resp = admin("GET", "/api/v1/banks/alpha/entries" + query)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    assert [e["id"] for e in page("")["entries"]] == sorted(ids, reverse=True)
    assert page("?q=case-1")["entries"] and {e["case_id"] for e in page("?q=case-1")["entries"]} == {"case-1"}
    assert [e["id"] for e in page("?q=ref-9")["entries"]] == [ids[-1]]
    assert [e["id"] for e in page("?q=FFFF")["entries"]] == [ids[-1]]  # hash prefix, any case
    assert {e["signal"] for e in page("?signal=md5")["entries"]} == {"md5"}

    seen, before = [], ""
    while True:
        got = page(f"?limit=2&signal=md5{before}")
        seen += [e["id"] for e in got["entries"]]
        if got["next_before_id"] is None:
            break
        before = f"&before_id={got['next_before_id']}"
    assert seen == sorted(ids[:5], reverse=True)

    admin("POST", f"/api/v1/banks/alpha/entries/{ids[0]}/disable", {})
    assert [e["id"] for e in page("?status=disabled")["entries"]] == [ids[0]]

    for bad in ("?limit=0", "?limit=abc", "?limit=201", "?status=gone", "?signal=md4", "?before_id=x"):
        resp = admin("GET", "/api/v1/banks/alpha/entries" + bad)
        assert resp.status_code == 400, bad


def test_entry_lifecycle_and_withdrawn_is_final(admin, sessions):
    make_bank(sessions, "alpha")
    (eid,) = add_hashes(sessions, "alpha", EntrySpec("md5", MD5))
    base = f"/api/v1/banks/alpha/entries/{eid}"
    resp = admin("POST", base + "/disable", {"reason": "too broad"})
    assert resp.status_code == 200
    assert resp.get_json()["changed"] == 1 and resp.get_json()["entry"]["status"] == "disabled"
    assert resp.get_json()["entry"]["status_reason"] == "too broad"
    # An empty body is fine for status changes.
    resp = admin("POST", base + "/enable", data="", content_type="application/json")
    assert resp.status_code == 200 and resp.get_json()["entry"]["status"] == "active"
    assert admin("POST", base + "/withdraw", {"reason": "victim asked"}).get_json()["changed"] == 1
    assert admin("POST", base + "/withdraw", {}).get_json()["changed"] == 0
    for verb in ("enable", "disable"):
        resp = admin("POST", f"{base}/{verb}", {})
        assert resp.status_code == 409 and "withdrawn" in resp.get_json()["error"]
    entry = admin("GET", base).get_json()
    assert entry["status"] == "withdrawn" and entry["withdrawn_at"] and entry["status_changed_by"] == "ada"
    assert admin("POST", base + "/withdraw", {"reason": 5}).status_code == 400
    assert admin("POST", base + "/withdraw", {"why": "x"}).status_code == 400


def test_flood_control_quarantine_is_listed_and_released(admin, sessions):
    make_bank(sessions, "alpha")
    flood, calm = add_hashes(sessions, "alpha", EntrySpec("md5", MD5), EntrySpec("sha256", SHA))
    record_hits(sessions, flood, times=3, max_hits=3)
    record_hits(sessions, calm, times=1, max_hits=3)
    listed = admin("GET", "/api/v1/banks/quarantined").get_json()["entries"]
    assert [(e["id"], e["bank"], e["status"]) for e in listed] == [(flood, "alpha", "quarantined")]
    entry = admin("GET", f"/api/v1/banks/alpha/entries/{flood}").get_json()
    assert entry["match_count"] == 3 and entry["last_matched_at"] and entry["hits"][0]["hits"] == 3
    assert admin("GET", "/api/v1/banks/alpha").get_json()["stats"]["matches"] == 4
    resp = admin("POST", f"/api/v1/banks/alpha/entries/{flood}/enable", {"reason": "checked: real NCII"})
    assert resp.get_json()["entry"]["status"] == "active"
    assert admin("GET", "/api/v1/banks/quarantined").get_json()["entries"] == []


def test_a_token_bound_to_a_bank_sees_only_that_bank(db_url, sessions):
    make_bank(sessions, "alpha")
    make_bank(sessions, "beta")
    (a_entry,) = add_hashes(sessions, "alpha", EntrySpec("md5", MD5))
    (b_entry,) = add_hashes(sessions, "beta", EntrySpec("md5", MD5))
    record_hits(sessions, a_entry, times=2, max_hits=2)
    record_hits(sessions, b_entry, times=2, max_hits=2)
    secret = make_token(sessions, "bound", ["banks:read", "banks:write", "hashes:submit"], bank="beta")
    c, h = web_app(db_url).test_client(), bearer(secret)
    assert [b["name"] for b in c.get("/api/v1/banks", headers=h).get_json()["banks"]] == ["beta"]
    assert c.get("/api/v1/banks/alpha", headers=h).status_code == 404
    assert c.get(f"/api/v1/banks/alpha/entries/{a_entry}", headers=h).status_code == 404
    assert c.post(f"/api/v1/banks/alpha/entries/{a_entry}/withdraw", json={}, headers=h).status_code == 404
    quarantined = c.get("/api/v1/banks/quarantined", headers=h).get_json()["entries"]
    assert [e["id"] for e in quarantined] == [b_entry]
    assert c.post("/api/v1/banks", json={"name": "gamma", "action": "review"}, headers=h).status_code == 403
    # ... and cannot raise the trust placed in its own bank.
    resp = c.patch("/api/v1/banks/beta", json={"action": "auto_remove"}, headers=h)
    assert resp.status_code == 403 and "ask an admin" in resp.get_json()["error"]
    with sessions() as s:
        assert s.get(BankEntry, a_entry).status == "quarantined"  # type: ignore[union-attr]


def test_input_the_database_cannot_store_is_a_400_not_a_500(db_url, sessions):
    make_bank(sessions, "alpha")
    app = web_app(db_url)
    app.config["TESTING"] = False  # errors become responses, as in production
    c, h = app.test_client(), bearer(make_token(sessions, "writer", ["banks:read", "banks:write"]))
    assert c.get("/api/v1/banks/al%00pha", headers=h).status_code == 400
    assert c.get("/api/v1/banks/alpha/entries?q=ab%00", headers=h).status_code == 400
    entry = {"signal": "md5", "value": MD5, "note": "a\x00b"}
    resp = c.post("/api/v1/banks/alpha/entries", json={"entries": [entry]}, headers=h)
    assert resp.status_code == 400 and "NUL" in resp.get_json()["error"]
    resp = c.post("/api/v1/banks", data="[" * 100_000, content_type="application/json", headers=h)
    assert resp.status_code == 400
    nul_user = {"Authorization": "Basic " + base64.b64encode(b"a\x00:password123").decode()}
    assert c.get("/api/v1/banks", headers=nul_user).status_code == 401
