"""The review console in a real browser (headless Chromium): log in, claim, reveal,
decide by keyboard, escalate to a senior, take a break.

What the Flask test client cannot show: that the CSS really blurs the picture,
that console.js turns key presses into claims and decisions and posts the
reveal audit, that the Content-Security-Policy lets the console's own scripts
run (the fixture fails a test whose page logged a script error or a CSP
violation). Each step leaves a screenshot in tests/browser/artifacts (or
$BROWSER_ARTIFACTS_DIR). Checks against the database use the same PostgreSQL
the server writes to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from moderation.config import Settings, load_settings
from moderation.metrics import Metrics
from moderation.storage import queue
from moderation.storage.models import AuditRecord, Decision, Item, ItemMedia, User
from moderation.web import create_app
from tests.conftest import wait_until
from tests.support.browser import Console
from tests.support.factories import make_item
from tests.support.images import encode, synthetic_image

PASSWORD = "correct horse battery"
WEB = Path(__file__).resolve().parents[2] / "moderation" / "web"
ITEM_PAGE = re.compile(r"^/items/(\d+)$")


def _routes() -> set[str]:
    settings = load_settings({}, database_url="sqlite://", secret_key="x", dev_mode=True)
    app = create_app(settings, metrics=Metrics(CollectorRegistry()))
    return {rule.rule for rule in app.url_map.iter_rules()}


def _shipped(*needles: str, suffixes: tuple[str, ...] = (".js", ".html", ".css")) -> bool:
    """Whether the console's templates or static files mention any of ``needles``."""
    files = [p for p in WEB.rglob("*") if p.suffix in suffixes and p.is_file()]
    return any(n in p.read_text(encoding="utf-8", errors="replace") for p in files for n in needles)


HAS_BREAK = "/break" in _routes()
HAS_GREYSCALE = _shipped("grayscale(", suffixes=(".css",))
HAS_HOLD = _shipped("data-hold", suffixes=(".html",))
HAS_HELP = _shipped('data-key="?"', '"?"', "'?'", suffixes=(".js", ".html"))


# -- the world -------------------------------------------------------------------------
def add_user(sessions: Any, username: str, role: str = "moderator") -> str:
    """A console user (any role, senior included); returns the password."""
    with sessions() as s:
        s.add(User(username=username, password_hash=generate_password_hash(PASSWORD), role=role))
        s.commit()
    return PASSWORD


def seed_items(sessions: Any, count: int) -> list[int]:
    """``count`` pending items, each with a different synthetic JPEG, served in this order."""
    ids = []
    with sessions() as s:
        for n in range(1, count + 1):
            item = make_item(n, sha256=f"{n:064x}", md5=f"{n:032x}")
            queue.schedule(item, Settings())  # SLA deadline and rank, as the worker sets them
            s.add(item)
            s.flush()
            s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=_jpeg(n)))
            ids.append(item.id)
        s.commit()
    return ids


def _jpeg(seed: int) -> bytes:
    return encode(synthetic_image(seed, size=(360, 480)))


def item_id(console: Console) -> int:
    match = ITEM_PAGE.match(console.path())
    assert match, f"expected an item page, got {console.path()}"
    return int(match.group(1))


def claim(console: Console) -> int:
    """Press N on the queue page; the item page it lands on, media loaded."""
    if console.path() != "/":
        console.open("/")
    console.press_and_load("n")
    found = item_id(console)
    console.wait_media_loaded()
    return found


def decisions(sessions: Any) -> list[tuple[int, str, str, str | None]]:
    with sessions() as s:
        rows = s.scalars(select(Decision).order_by(Decision.id)).all()
        return [(d.item_id, d.action, d.reason, d.moderator) for d in rows]


def audited(sessions: Any, action: str, item: int, actor: str) -> bool:
    with sessions() as s:
        query = select(AuditRecord).where(
            AuditRecord.action == action, AuditRecord.item_id == item, AuditRecord.actor == actor
        )
        return s.scalar(query) is not None


# -- tests -----------------------------------------------------------------------------
def test_login_form_rejects_a_wrong_password_and_lands_on_the_queue(open_console, sessions):
    password = add_user(sessions, "mo")
    console = open_console()
    console.open("/")
    assert console.path() == "/login"  # the console needs a login
    console.shot("login-page")

    console.login("mo", "not the password")
    assert console.path() == "/login"
    assert "wrong username or password" in console.flashes().lower()
    console.shot("wrong-password")

    console.login("mo", password)
    assert console.path() == "/"
    assert "Review queue" in console.text() and "mo (moderator)" in console.text()
    console.shot("queue")


def test_n_claims_the_next_item_and_shows_it_blurred(open_console, sessions):
    password = add_user(sessions, "mo")
    (only,) = seed_items(sessions, 1)
    console = open_console()
    console.login("mo", password)
    console.shot("queue")

    assert claim(console) == only
    assert "blur(" in console.media_filter()
    assert console.shortcut("r") is not None, "no Reveal shortcut on the item page"
    console.shot("item-blurred")
    assert audited(sessions, "item.claim", only, "mo")


def test_next_button_claims_too(open_console, sessions):
    password = add_user(sessions, "mo")
    (only,) = seed_items(sessions, 1)
    console = open_console()
    console.login("mo", password)

    console.click_and_load(console.button("Next item"))
    assert item_id(console) == only
    console.wait_media_loaded()
    assert "blur(" in console.media_filter()
    console.shot("item-blurred")


@pytest.mark.skipif(not HAS_GREYSCALE, reason="no greyscale filter in the console's CSS yet")
def test_media_is_greyscale_by_default(open_console, sessions):
    password = add_user(sessions, "mo")
    seed_items(sessions, 1)
    console = open_console()
    console.login("mo", password)
    claim(console)
    assert "grayscale(" in console.media_filter(), console.media_filter()
    console.shot("item-greyscale")


def test_r_reveals_the_media_and_the_reveal_is_audited(open_console, sessions):
    from selenium.webdriver.common.action_chains import ActionChains

    password = add_user(sessions, "mo")
    (only,) = seed_items(sessions, 1)
    console = open_console()
    console.login("mo", password)
    claim(console)
    assert not audited(sessions, "item.reveal", only, "mo")
    console.shot("item-blurred")

    # Held down, not just tapped: shows the picture whether R toggles or is hold-to-reveal.
    ActionChains(console.driver).key_down("r").perform()
    try:
        console.wait(lambda _d: "blur(" not in console.media_filter(), "the blur to go")
        console.shot("item-revealed")
    finally:
        ActionChains(console.driver).key_up("r").perform()
    wait_until(lambda: audited(sessions, "item.reveal", only, "mo"), timeout=10)


@pytest.mark.skipif(not HAS_HOLD, reason="no hold-to-reveal (data-hold) on the item page yet")
def test_hold_to_reveal_shows_the_media_only_while_the_key_is_down(open_console, sessions):
    from selenium.webdriver.common.action_chains import ActionChains

    password = add_user(sessions, "mo")
    (only,) = seed_items(sessions, 1)
    console = open_console()
    console.login("mo", password)
    claim(console)
    holds = console.driver.find_elements("css selector", "[data-hold][data-key]")
    visible = [e for e in holds if e.is_displayed()]
    assert visible, "no visible hold-to-reveal control"
    key = str(visible[0].get_attribute("data-key"))

    ActionChains(console.driver).key_down(key).perform()
    try:
        console.wait(lambda _d: "blur(" not in console.media_filter(), "the blur to go while held")
        console.shot("held")
    finally:
        ActionChains(console.driver).key_up(key).perform()
    console.wait(lambda _d: "blur(" in console.media_filter(), "the blur to come back on release")
    console.shot("released")
    wait_until(lambda: audited(sessions, "item.reveal", only, "mo"), timeout=10)


def test_keys_pick_a_reason_and_decide_then_serve_the_next_item(open_console, sessions, sent):
    password = add_user(sessions, "mo")
    seed_items(sessions, 2)
    console = open_console()
    console.login("mo", password)

    first = claim(console)
    key = console.reason_key("adult_nudity")
    console.press(key)
    assert console.reason_selected("adult_nudity")
    console.shot("reason-picked")
    console.press_and_load("x")  # remove: straight on to the next item
    second = item_id(console)
    assert second != first
    assert f"Item {first}: remove" in console.flashes()
    console.wait_media_loaded()
    console.shot("next-item")

    console.press(console.reason_key("not_violating"))
    console.press_and_load("a")  # allow: the queue is now empty
    assert console.path() == "/"
    assert "queue is empty" in console.flashes().lower()
    console.shot("queue-empty")

    assert decisions(sessions) == [
        (first, "remove", "adult_nudity", "mo"),
        (second, "allow", "not_violating", "mo"),
    ]
    with sessions() as s:
        assert {i.state for i in s.scalars(select(Item))} == {"decided"}
    wait_until(lambda: len(sent) == 2, timeout=10)  # both decisions published


def test_escalation_leaves_the_moderator_and_reaches_a_senior(open_console, sessions):
    mo_password = add_user(sessions, "mo")
    sen_password = add_user(sessions, "sen", role="senior")
    (only,) = seed_items(sessions, 1)
    console = open_console()
    console.login("mo", mo_password)

    assert claim(console) == only
    console.press(console.reason_key("unclear"))
    console.press_and_load("e")
    assert not ITEM_PAGE.match(console.path()), "the escalated item stayed with the moderator"
    assert "queue is empty" in console.flashes().lower()  # moderators cannot claim it again
    console.shot("moderator-after-escalation")
    assert decisions(sessions) == [(only, "escalate", "unclear", "mo")]
    with sessions() as s:
        escalated = s.get(Item, only)
        assert escalated is not None and escalated.tier == "senior" and escalated.state == "pending"

    console.logout()
    assert console.path() == "/login"
    console.login("sen", sen_password)
    assert claim(console) == only
    assert "escalated" in console.text().lower()
    assert console.shortcut("x") is not None, "the senior cannot decide the escalated item"
    console.shot("senior-has-item")


@pytest.mark.skipif(not HAS_BREAK, reason="no /break route yet (break prompt after BREAK_AFTER_ITEMS)")
def test_break_prompt_after_the_configured_items(open_console, sessions):
    password = add_user(sessions, "mo")
    seed_items(sessions, 2)
    console = open_console(break_after_items=1)
    console.login("mo", password)

    claim(console)
    console.shot("first-item")
    console.press(console.reason_key("not_violating"))
    console.press_and_load("a")
    if not console.path().startswith("/break"):
        console.open("/")
        console.press_and_load("n")
    assert console.path().startswith("/break"), f"expected the break page, got {console.path()}"
    assert "break" in console.text().lower()
    console.shot("break-prompt")

    console.open("/")  # no items until the break is acknowledged
    console.press_and_load("n")
    assert console.path().startswith("/break"), f"served {console.path()} during a break"

    ack = console.shortcut("b")
    if ack is not None:
        console.press_and_load("b")
    else:
        buttons = console.driver.find_elements("css selector", "main form button, main form [type=submit]")
        assert buttons, "no way to acknowledge the break on the page"
        console.click_and_load(buttons[0])
    assert not console.path().startswith("/break")
    console.shot("after-break")

    claim(console)
    console.shot("claimed-again")


@pytest.mark.skipif(not HAS_HELP, reason="no '?' keyboard help in the console yet")
def test_question_mark_lists_the_shortcuts(open_console, sessions):
    password = add_user(sessions, "mo")
    seed_items(sessions, 1)
    console = open_console()
    console.login("mo", password)
    claim(console)

    # Mark what is visible now; the overlay is what becomes visible after "?".
    console.driver.execute_script(
        "document.querySelectorAll('body *').forEach(e => {"
        " if (e.getClientRects().length) e.dataset.probeVisible = '1'; });"
    )
    console.press("?")
    overlay = console.wait(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('body *')].find(e =>"
            " !e.dataset.probeVisible && e.getClientRects().length"
            " && e.querySelectorAll('kbd').length >= 3) || null;"
        ),
        "a keyboard help overlay after '?'",
    )
    listed = overlay.text.lower()
    for action in ("reveal", "remove", "allow"):
        assert action in listed, f"{action!r} missing from the shortcut help: {overlay.text!r}"
    console.shot("keyboard-help")
