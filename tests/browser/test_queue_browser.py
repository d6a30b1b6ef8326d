"""Claim leases and SLA countdowns in a real browser (static/lease.js): the open
item page renews its claim, says so when the claim is gone, and the queue views
count down. The fixture fails a test whose page logged a script error or a CSP
violation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from selenium.webdriver.common.by import By
from werkzeug.security import generate_password_hash

from moderation.config import Settings
from moderation.storage import queue
from moderation.storage.models import Item, ItemMedia, User, utcnow
from tests.conftest import wait_until
from tests.support.factories import make_item
from tests.support.images import encode, synthetic_image

PASSWORD = "correct horse battery"
LEASE = 12  # seconds: lease.js renews once two thirds are left, about 4 s after the claim


def _user(sessions: Any, username: str, role: str = "moderator") -> None:
    with sessions() as s:
        s.add(User(username=username, password_hash=generate_password_hash(PASSWORD), role=role))
        s.commit()


def _item(sessions: Any, age_hours: float = 0) -> int:
    with sessions() as s:
        item = make_item(1, created_at=utcnow() - timedelta(hours=age_hours))
        queue.schedule(item, Settings())
        s.add(item)
        s.flush()
        s.add(ItemMedia(item_id=item.id, content_type="image/jpeg", data=encode(synthetic_image(1))))
        s.commit()
        return item.id


def _lease(sessions: Any, item_id: int) -> Any:
    with sessions() as s:
        return s.get(Item, item_id).lease_expires_at


def _claim_in_browser(console: Any) -> None:
    console.login("mo", PASSWORD)
    console.press_and_load("n")
    assert console.path().startswith("/items/")


def test_the_open_item_page_renews_its_lease_and_counts_down(open_console, sessions):
    item_id = _item(sessions, age_hours=45)  # 48 h SLA: 3 h left
    _user(sessions, "mo")
    console = open_console(claim_lease_seconds=LEASE)
    _claim_in_browser(console)
    first = _lease(sessions, item_id)
    lease_text = console.driver.find_element(By.ID, "lease-left")
    assert "left" in lease_text.text
    sla = console.driver.find_element(By.ID, "sla-left").text
    assert sla.startswith("2 h 59 min left") or sla.startswith("3 h left"), sla
    before = lease_text.text
    console.wait(lambda d: lease_text.text != before, "the lease countdown to tick")
    wait_until(lambda: _lease(sessions, item_id) > first, timeout=LEASE)  # renewed by the page
    console.shot("lease-renewed")
    banner = console.driver.find_element(By.ID, "lease-banner")
    assert not banner.is_displayed()


def test_a_lost_claim_is_announced_and_the_decision_buttons_are_disabled(open_console, sessions):
    item_id = _item(sessions)
    _user(sessions, "mo")
    console = open_console(claim_lease_seconds=LEASE)
    _claim_in_browser(console)
    with sessions() as s:  # the lease ran out while the laptop slept, and it went back to the queue
        queue.release(s, s.get(Item, item_id))
        s.commit()
    banner = console.driver.find_element(By.ID, "lease-banner")
    console.wait(lambda d: banner.is_displayed(), "the lost-claim banner", timeout=LEASE)
    assert "claim on this item has ended" in banner.text
    assert not console.button("Remove").is_enabled()
    assert console.driver.find_element(By.ID, "lease-left").text == "ended"
    console.shot("claim-lost")


def test_the_queue_views_show_counts_and_live_sla_countdowns(open_console, sessions):
    _item(sessions, age_hours=50)  # breached 2 h ago
    _user(sessions, "sen", role="senior")
    console = open_console()
    console.login("sen", PASSWORD)
    console.open("/queues?view=breached")
    assert "Breached (1)" in console.text()
    countdown = console.driver.find_element(By.CSS_SELECTOR, '[data-kind="sla"]')
    assert countdown.text.startswith("breached 2 h"), countdown.text
    console.shot("queue-views")
