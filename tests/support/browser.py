"""Real-browser helpers: headless Chromium driven by Selenium, the app on a loopback server.

Chromium and chromedriver come from the system (Debian: ``chromium`` and
``chromium-driver``, installed by ``make browser-deps``); ``CHROMIUM_BINARY`` and
``CHROMEDRIVER`` name others. Selenium Manager is never asked to download a
driver: the test machines have no internet, and a browser the tests did not
choose would make results depend on the day. The browser resolves no host
names and uses no proxy, so a page can only reach the loopback server.
"""

from __future__ import annotations

import base64
import glob
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import make_server

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # containers and CI runners often run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",  # small /dev/shm in containers crashes tabs
    "--disable-extensions",
    "--no-first-run",
    "--no-proxy-server",
    # Only loopback: every host name fails to resolve, 127.0.0.1 is used as is.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,900",
)
WAIT_S = 10.0
# Lines of the browser's console that mean a page is broken: a script error or
# something the Content-Security-Policy blocked (an inline script or style).
SCRIPT_ERROR = re.compile(r"Content Security Policy|Uncaught|SyntaxError|TypeError|ReferenceError")


class BrowserUnavailable(RuntimeError):
    """Chromium or chromedriver is missing or does not start."""


def find_chromium() -> tuple[str, str]:
    """Paths of the Chromium binary and its chromedriver, or BrowserUnavailable."""
    binary = _executable(os.environ.get("CHROMIUM_BINARY"), *BROWSER_NAMES)
    driver = _executable(os.environ.get("CHROMEDRIVER"), "chromedriver")
    missing = [what for what, path in (("chromium", binary), ("chromedriver", driver)) if not path]
    if missing:
        raise BrowserUnavailable(
            f"{' and '.join(missing)} not found (Debian: apt-get install chromium chromium-driver, "
            "or `make browser-deps`)"
        )
    assert binary and driver
    return binary, driver


def _executable(configured: str | None, *names: str) -> str | None:
    if configured:  # a path named in the environment is used or reported missing, never replaced
        return configured if os.access(configured, os.X_OK) else None
    return next((found for name in names if (found := shutil.which(name))), None)


def start_chromium(binary: str, driver_path: str) -> Any:
    """A headless Chromium session. Its browser console is kept for ``script_errors``."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: the driver path is given anyway
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        raise BrowserUnavailable(f"Chromium did not start: {exc.msg or exc}") from exc


def artifacts_dir() -> Path:
    """Where screenshots go: ``BROWSER_ARTIFACTS_DIR``, else tests/browser/artifacts."""
    configured = os.environ.get("BROWSER_ARTIFACTS_DIR")
    root = Path(__file__).resolve().parents[1] / "browser" / "artifacts"
    path = Path(configured) if configured else root
    path.mkdir(parents=True, exist_ok=True)
    return path


class LiveServer:
    """A WSGI app served on 127.0.0.1 (a free port) by a thread, for a real browser."""

    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Console:
    """The review console as a moderator sees it in the browser.

    Finds things by what users see: visible text, form roles, ``data-key``
    shortcuts, so small markup changes do not break the tests. Every step can
    leave a numbered screenshot (``shot``) in the artefacts folder.
    """

    def __init__(self, driver: Any, base_url: str, shots: Path, test_name: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.taken: list[Path] = []

    # -- navigation ---------------------------------------------------------------
    def open(self, path: str = "/") -> None:
        self.driver.get(self.base_url + path)
        self._wait_ready()

    def path(self) -> str:
        return urlsplit(self.driver.current_url).path

    def press(self, key: str) -> None:
        """Type one key at the page, as a moderator on the keyboard would."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()

    def press_and_load(self, key: str) -> None:
        """Press a shortcut that submits a form, and wait for the next page."""
        self._and_load(lambda: self.press(key))

    def click_and_load(self, element: Any) -> None:
        self._and_load(element.click)

    def _and_load(self, act: Callable[[], None]) -> None:
        from selenium.webdriver.common.by import By

        old = self.driver.find_element(By.TAG_NAME, "html")
        act()
        self.wait(lambda d: _gone(old), "the page did not change")
        self._wait_ready()

    def _wait_ready(self) -> None:
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete", "page load")

    def wait(self, condition: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition, f"timed out waiting for: {what}")

    # -- what the page shows ------------------------------------------------------
    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def flashes(self) -> str:
        """The status messages at the top of the page, one per line."""
        from selenium.webdriver.common.by import By

        return "\n".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, "[role=status]"))

    def button(self, label: str) -> Any:
        """The visible button whose text starts with ``label`` (case-insensitive)."""
        from selenium.webdriver.common.by import By

        for element in self.driver.find_elements(By.CSS_SELECTOR, "button, input[type=submit]"):
            text = (element.text or element.get_attribute("value") or "").strip().lower()
            if element.is_displayed() and text.startswith(label.lower()):
                return element
        raise AssertionError(f"no button labelled {label!r} on {self.path()}")

    def shortcut(self, key: str) -> Any | None:
        """The element a key press acts on (``data-key``), or None."""
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, f'[data-key="{key}"]')
        return found[0] if found else None

    def reason_key(self, code: str) -> str:
        """The key that picks the decision reason ``code``."""
        from selenium.webdriver.common.by import By

        radios = self.driver.find_elements(By.CSS_SELECTOR, f'input[type=radio][value="{code}"]')
        assert radios, f"no reason {code!r} on the decision form"
        key = radios[0].get_attribute("data-key")
        assert key, f"reason {code!r} has no keyboard shortcut"
        return str(key)

    def reason_selected(self, code: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(
            self.driver.find_element(By.CSS_SELECTOR, f'input[type=radio][value="{code}"]').is_selected()
        )

    def media(self) -> Any:
        """The item's picture (or video) on the review page."""
        from selenium.webdriver.common.by import By

        return self.wait(
            lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, "main img, main video")), None),
            "the item's media",
        )

    def media_filter(self) -> str:
        """The CSS filter the browser applies to the media right now."""
        return str(self.driver.execute_script("return getComputedStyle(arguments[0]).filter", self.media()))

    def wait_media_loaded(self) -> None:
        script = (
            "const m = arguments[0];"
            "return m.tagName === 'IMG' ? m.complete && m.naturalWidth > 0 : m.readyState >= 1;"
        )
        self.wait(lambda d: d.execute_script(script, self.media()), "the media to load")

    def script_errors(self) -> list[str]:
        """Script errors and CSP violations logged by the browser since the last call."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry.get("level") == "SEVERE" and SCRIPT_ERROR.search(entry.get("message", ""))
        ]

    # -- steps -------------------------------------------------------------------
    def login(self, username: str, password: str) -> None:
        """Fill in and submit the login form."""
        from selenium.webdriver.common.by import By

        if self.path() != "/login":
            self.open("/login")
        for name, value in (("username", username), ("password", password)):
            field = self.driver.find_element(By.CSS_SELECTOR, f"main form input[name={name}]")
            field.clear()
            field.send_keys(value)
        self.click_and_load(self.button("Log in"))

    def logout(self) -> None:
        self.click_and_load(self.button("Log out"))

    def forget_old_shots(self) -> None:
        """Delete this test's screenshots from an earlier run, so none is mistaken for this one's."""
        for old in self.shots.glob(f"{glob.escape(self.test_name)}-[0-9][0-9]-*.png"):
            old.unlink(missing_ok=True)

    def shot(self, label: str) -> Path:
        """Save a PNG of the whole page as ``<test>-<step>-<label>.png``."""
        name = f"{self.test_name}-{len(self.taken) + 1:02d}-{re.sub(r'[^a-z0-9]+', '-', label.lower())}.png"
        path = self.shots / name
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        png = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(png["data"]))
        self.taken.append(path)
        return path


def _gone(element: Any) -> bool:
    """Whether ``element`` left the document: stale, or (while Chromium swaps
    the document) "Node with given id does not belong to the document", which
    chromedriver reports as a plain WebDriverException instead."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False
