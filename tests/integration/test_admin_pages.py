"""Admin pages: banks, entries, quarantine and API tokens. Admin only, CSRF on
every form, everything escaped, no inline scripts or styles."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from moderation.domain import EntrySpec
from moderation.storage import banks
from moderation.storage.models import ApiToken, Bank, BankEntry
from tests.integration.test_banks_api import (
    MD5,
    PDQ,
    SHA,
    add_hashes,
    bearer,
    make_bank,
    record_hits,
    web_app,
)
from tests.support.web import add_user, login

EVIL = '<script>alert("x")</script>'
PAGES = ("/admin/banks", "/admin/banks/alpha", "/admin/quarantine", "/admin/tokens")


@pytest.fixture
def app(db_url, sessions):
    make_bank(sessions, "alpha")
    return web_app(db_url)


@pytest.fixture
def admin(app, sessions):
    """A logged-in admin's client and CSRF token."""
    client = app.test_client()
    return client, login(client, "ada", add_user(sessions, "ada", role="admin"))


def _bank(sessions: Any, name: str = "alpha") -> Bank:
    with sessions() as s:
        return banks.get_bank(s, name)


def _statuses(sessions: Any) -> dict[int, str]:
    with sessions() as s:
        return {e.id: e.status for e in s.scalars(select(BankEntry))}


def _flashes(html: str) -> list[str]:
    return re.findall(r'<p class="flash [a-z]+" role="status">(.*?)</p>', html)


def test_pages_are_for_admins_only(app, sessions):
    c = app.test_client()
    for path in PAGES:
        resp = c.get(path)
        assert resp.status_code == 302 and "/login" in resp.location
    mod = app.test_client()
    csrf = login(mod, "mo", add_user(sessions, "mo"))
    for path in PAGES:
        assert mod.get(path).status_code == 403
    assert (
        mod.post("/admin/banks", data={"csrf_token": csrf, "name": "x", "action": "review"}).status_code
        == 403
    )
    assert "/admin/banks" not in mod.get("/").get_data(as_text=True)  # no nav link for moderators


def test_pages_render_for_admins_with_strict_headers(admin, sessions):
    c, _ = admin
    assert 'href="/admin/banks">Banks</a>' in c.get("/").get_data(as_text=True)
    for path in PAGES:
        resp = c.get(path)
        assert resp.status_code == 200, path
        html = resp.get_data(as_text=True)
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        # No inline script or style: the CSP would block them.
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/console.js">']
        assert "style=" not in html and "<style" not in html and " on" + "click=" not in html
    assert c.get("/admin/banks/nope").status_code == 404


def test_every_form_needs_the_csrf_token(admin, sessions):
    c, csrf = admin
    (eid,) = add_hashes(sessions, "alpha", EntrySpec("md5", MD5))
    posts = [
        ("/admin/banks", {"name": "beta", "action": "review", "pdq_distance": "31", "vpdq_share": "0.8"}),
        ("/admin/banks/alpha/settings", {"action": "allow", "pdq_distance": "3", "vpdq_share": "0.5"}),
        ("/admin/banks/alpha/entries", {"hashes": f"sha256 {SHA}"}),
        (f"/admin/banks/alpha/entries/{eid}/status", {"verb": "withdraw"}),
        ("/admin/tokens", {"name": "t", "scope": "banks:read"}),
        ("/admin/tokens/revoke", {"name": "t"}),
    ]
    for path, form in posts:
        assert c.post(path, data=form).status_code == 400, path
        assert c.post(path, data={**form, "csrf_token": "forged"}).status_code == 400, path
    with sessions() as s:
        assert [b.name for b in banks.list_banks(s)] == ["alpha"]
        assert banks.get_bank(s, "alpha").action == "review"
        assert s.scalars(select(ApiToken)).all() == []
    assert _statuses(sessions) == {eid: "active"}
    # The same forms with the token work.
    for path, form in posts:
        assert c.post(path, data={**form, "csrf_token": csrf}).status_code in (200, 302), path
    assert _bank(sessions, "beta").action == "review"
    assert _bank(sessions).action == "allow"
    assert sorted(_statuses(sessions).values()) == ["active", "withdrawn"]


def test_create_bank_form(admin, sessions):
    c, csrf = admin
    form = {
        "csrf_token": csrf,
        "name": "helpline",
        "action": "auto_remove",
        "description": "StopNCII-style victim hashes",
        "pdq_distance": "24",
        "vpdq_share": "0.9",
    }
    resp = c.post("/admin/banks", data=form, follow_redirects=True)
    assert "Bank helpline created." in resp.get_data(as_text=True)
    bank = _bank(sessions, "helpline")
    assert (bank.action, bank.pdq_distance, bank.vpdq_share) == ("auto_remove", 24, 0.9)
    page = c.get("/admin/banks").get_data(as_text=True)
    assert "helpline" in page and "StopNCII-style victim hashes" in page
    for bad, message in (
        ({"name": "helpline"}, "already exists"),
        ({"name": "x", "pdq_distance": "far"}, "PDQ distance must be a number"),
        ({"name": "x", "pdq_distance": "99"}, "pdq_distance must be an integer 0..31"),
        ({"name": "x", "action": "explode"}, "unknown action"),
        ({"name": "quarantined"}, "reserved"),
    ):
        html = c.post("/admin/banks", data={**form, **bad}, follow_redirects=True).get_data(as_text=True)
        assert any(message in f for f in _flashes(html)), (bad, _flashes(html))
    with sessions() as s:
        assert [b.name for b in banks.list_banks(s)] == ["alpha", "helpline"]


def test_bank_settings_form(admin, sessions):
    c, csrf = admin
    form = {"csrf_token": csrf, "action": "review_high", "pdq_distance": "10", "vpdq_share": "0.7"}
    resp = c.post("/admin/banks/alpha/settings", data=form)  # no "enabled": the box is unticked
    assert resp.status_code == 302 and resp.location.endswith("/admin/banks/alpha")
    bank = _bank(sessions)
    assert (bank.action, bank.pdq_distance, bank.vpdq_share, bank.enabled) == ("review_high", 10, 0.7, False)
    c.post("/admin/banks/alpha/settings", data={**form, "enabled": "on"})
    assert _bank(sessions).enabled is True
    html = c.post(
        "/admin/banks/alpha/settings",
        data={**form, "vpdq_share": "2", "action": "allow"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert any("vpdq_share" in f for f in _flashes(html))
    assert _bank(sessions).action == "review_high"  # nothing of a refused change is kept


def test_add_hashes_form(admin, sessions):
    c, csrf = admin
    text = f"# from the helpline\nmd5 {MD5.upper()}\n\npdq {PDQ}\n"
    resp = c.post(
        "/admin/banks/alpha/entries",
        data={"csrf_token": csrf, "hashes": text, "case_id": "HL-9", "note": "n"},
        follow_redirects=True,
    )
    assert "2 hashes added, 0 already in the bank." in resp.get_data(as_text=True)
    with sessions() as s:
        rows = sorted((e.signal, e.value, e.case_id, e.added_by) for e in s.scalars(select(BankEntry)))
    assert rows == [("md5", MD5, "HL-9", "ada"), ("pdq", PDQ, "HL-9", "ada")]
    html = c.post(
        "/admin/banks/alpha/entries",
        data={"csrf_token": csrf, "hashes": f"sha256 {SHA}\nmd5 12345"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert any(f.startswith("line 2: md5 value must be 32 hex") for f in _flashes(html))
    for text in ("", "# only a comment", f"sha1 {SHA}"):
        html = c.post(
            "/admin/banks/alpha/entries", data={"csrf_token": csrf, "hashes": text}, follow_redirects=True
        ).get_data(as_text=True)
        assert _flashes(html) and "added" not in _flashes(html)[0]
    assert len(_statuses(sessions)) == 2  # nothing of the refused submissions was added


def test_entry_browser_search_filter_and_pages(admin, sessions):
    c, _ = admin
    ids = add_hashes(
        sessions,
        "alpha",
        *[EntrySpec("md5", f"{n:032x}", case_id="bulk") for n in range(60)],
        EntrySpec("sha256", SHA, case_id="case-7", source_ref="stopncii-123"),
    )
    record_hits(sessions, ids[-1], times=3)
    page = c.get("/admin/banks/alpha").get_data(as_text=True)
    assert f"<td>{ids[-1]}</td>" in page and f"<td>{ids[0]}</td>" not in page  # newest first, 50 a page
    older = re.search(r'href="([^"]*before_id=\d+[^"]*)">Older entries', page)
    assert older
    page2 = c.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f"<td>{ids[0]}</td>" in page2 and "Older entries" not in page2 and ">Newest<" in page2

    for q in ("case-7", "stopncii-123", SHA[:10]):
        found = c.get("/admin/banks/alpha", query_string={"q": q}).get_data(as_text=True)
        assert f"<td>{ids[-1]}</td>" in found and f"<td>{ids[0]}</td>" not in found, q
        assert "<td>3</td>" in found  # match count
    banks_disabled = c.get("/admin/banks/alpha", query_string={"status": "disabled"}).get_data(as_text=True)
    assert "No entries match this search." in banks_disabled
    assert c.get("/admin/banks/alpha", query_string={"status": "bogus", "before_id": "x"}).status_code == 200


def test_entry_buttons_change_status_with_reason(admin, sessions):
    c, csrf = admin
    (eid,) = add_hashes(sessions, "alpha", EntrySpec("md5", MD5))
    url = f"/admin/banks/alpha/entries/{eid}/status"

    def press(verb: str, reason: str = "") -> list[str]:
        data = {"csrf_token": csrf, "verb": verb, "reason": reason}
        return _flashes(c.post(url, data=data, follow_redirects=True).get_data(as_text=True))

    assert press("disable", "false positives") == [f"Entry {eid} disabled."]
    assert _statuses(sessions) == {eid: "disabled"}
    assert "false positives" in c.get("/admin/banks/alpha").get_data(as_text=True)
    assert press("enable") == [f"Entry {eid} enabled."]
    assert press("withdraw", "victim asked") == [f"Entry {eid} withdrawn."]
    assert "only a new submission of the hash brings it back" in press("enable")[0]
    assert "unknown entry action" in press("delete")[0]
    assert _statuses(sessions) == {eid: "withdrawn"}
    with sessions() as s:
        entry = s.get(BankEntry, eid)
        assert entry is not None and (entry.status_reason, entry.status_changed_by) == ("victim asked", "ada")


def test_quarantine_page_release_and_withdraw(admin, sessions):
    c, csrf = admin
    make_bank(sessions, "beta")
    (a,) = add_hashes(sessions, "alpha", EntrySpec("md5", MD5, case_id="flood"))
    (b,) = add_hashes(sessions, "beta", EntrySpec("pdq", PDQ))
    record_hits(sessions, a, times=2, max_hits=2)
    record_hits(sessions, b, times=2, max_hits=2)
    page = c.get("/admin/quarantine").get_data(as_text=True)
    assert f"<td>{a}</td>" in page and f"<td>{b}</td>" in page and "2 or more matches" in page
    resp = c.post(
        f"/admin/banks/alpha/entries/{a}/status",
        data={"csrf_token": csrf, "verb": "release", "back": "quarantine", "reason": "real"},
    )
    assert resp.status_code == 302 and resp.location.endswith("/admin/quarantine")
    c.post(
        f"/admin/banks/beta/entries/{b}/status",
        data={"csrf_token": csrf, "verb": "withdraw", "back": "quarantine"},
    )
    assert _statuses(sessions) == {a: "active", b: "withdrawn"}
    assert "Nothing is quarantined." in c.get("/admin/quarantine").get_data(as_text=True)


def test_tokens_page_shows_the_secret_once_and_revokes(admin, sessions):
    c, csrf = admin
    resp = c.post(
        "/admin/tokens",
        data={"csrf_token": csrf, "name": "helpline", "scope": ["hashes:submit"], "bank": "alpha"},
    )
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store, private"
    secret = re.search(r'<code class="secret-value">(mod_[^<]+)</code>', resp.get_data(as_text=True))
    assert secret
    api = c.application.test_client()  # no cookie: the token alone
    body = {"case_id": "c1", "hashes": [{"signal": "md5", "value": MD5}]}
    assert api.post("/api/v1/submissions", json=body, headers=bearer(secret.group(1))).status_code == 201
    listing = c.get("/admin/tokens").get_data(as_text=True)
    assert secret.group(1) not in listing and "helpline" in listing and "hashes:submit" in listing
    html = c.post(
        "/admin/tokens",
        data={"csrf_token": csrf, "name": "nobank", "scope": "hashes:submit"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert _flashes(html) == ["a hashes:submit token needs a bank: the bank its submissions go to"]
    assert "mod_" not in html
    html = c.post(
        "/admin/tokens", data={"csrf_token": csrf, "name": "noscope"}, follow_redirects=True
    ).get_data(as_text=True)
    assert any("scopes" in f for f in _flashes(html))

    html = c.post(
        "/admin/tokens/revoke", data={"csrf_token": csrf, "name": "helpline"}, follow_redirects=True
    ).get_data(as_text=True)
    assert "Token helpline revoked." in _flashes(html) and "revoked" in html
    assert api.get("/api/v1/submissions/c1", headers=bearer(secret.group(1))).status_code == 401
    html = c.post("/admin/tokens/revoke", data={"csrf_token": csrf, "name": "nope"}, follow_redirects=True)
    assert any("no token named" in f for f in _flashes(html.get_data(as_text=True)))


def test_submitted_text_is_escaped(admin, sessions):
    c, csrf = admin
    with sessions() as s:
        bank = banks.get_bank(s, "alpha")
        banks.update_bank(s, bank, actor="test", description=EVIL)
        s.commit()
    (eid,) = add_hashes(sessions, "alpha", EntrySpec("md5", MD5, case_id=EVIL, source_ref=EVIL, note=EVIL))
    record_hits(sessions, eid, times=2, max_hits=2)
    c.post("/admin/tokens", data={"csrf_token": csrf, "name": EVIL, "scope": "banks:read"})
    html = c.get("/admin/quarantine").get_data(as_text=True)
    assert f"<td>{eid}</td>" in html and EVIL not in html and "&lt;script&gt;" in html
    c.post(
        f"/admin/banks/alpha/entries/{eid}/status",
        data={"csrf_token": csrf, "verb": "disable", "reason": EVIL},
    )
    for path in ("/admin/banks", "/admin/banks/alpha", "/admin/tokens"):
        html = c.get(path).get_data(as_text=True)
        assert EVIL not in html and "&lt;script&gt;" in html, path
    # A flash message naming user input is escaped too.
    html = c.post(
        "/admin/banks", data={"csrf_token": csrf, "name": EVIL, "action": "review"}, follow_redirects=True
    ).get_data(as_text=True)
    assert EVIL not in html and "&lt;script&gt;" in html


def test_nul_characters_are_refused_not_a_500(admin, sessions):
    c, csrf = admin
    c.application.config["TESTING"] = False
    assert c.get("/admin/banks/al%00pha").status_code == 400
    assert c.get("/admin/banks/alpha?q=%00").status_code == 400
    form = {"csrf_token": csrf, "name": "b", "action": "review", "description": "\x00"}
    assert c.post("/admin/banks", data={**form, "pdq_distance": "3", "vpdq_share": "0.5"}).status_code == 400
    assert c.post("/admin/tokens/revoke", data={"csrf_token": csrf, "name": "x\x00"}).status_code == 400
