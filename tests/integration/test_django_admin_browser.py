"""The Django admin in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium): an operator logs in, filters the dead letters by vendor, replays one, and the real
worker delivers it. A screenshot of each page is saved (EVENTRELAY_SCREENSHOTS_DIR, else the
test's temporary folder); docs/console-deadletters.png is one of them.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.integration import test_django_admin as admin_tests
from tests.integration.helpers import wait_status
from tests.integration.test_django_admin import _dead_letters, _infobip, _log, _vtcdn, delivery
from tests.support import free_port

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

# The Django admin tests' fixtures: Django on the test database, an operator, an empty log.
django_admin = admin_tests.django_admin
operator = admin_tests.operator
empty_admin_log = admin_tests.empty_admin_log

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def live_server(django_admin: None) -> Iterator[str]:
    """Django's WSGI app (admin static files included) on a real port, in a thread."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *_: Any) -> None:
            return None

    port = free_port()
    server = ThreadedWSGIServer(("127.0.0.1", port), QuietHandler, allow_reuse_address=True)
    server.set_app(StaticFilesHandler(WSGIHandler()))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if IN_CI:
            pytest.fail("chromium or chromedriver missing: .ci/run installs them")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EVENTRELAY_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_an_operator_filters_dead_letters_by_vendor_and_replays_one_in_a_browser(
    browser: Any, live_server: str, operator: Any, mock_vendors: Any, screenshots: Path
) -> None:
    from django.contrib.admin.models import CHANGE
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    dead_vtcdn = _dead_letters(mock_vendors, "vtcdn", _vtcdn(3, prefix="carol"))
    dead_infobip = _dead_letters(mock_vendors, "infobip", _infobip(2))
    wait = WebDriverWait(browser, 20)
    saved: list[Path] = []

    def shot(name: str) -> None:
        path = screenshots / f"{len(saved) + 1:02d}-{name}.png"
        assert browser.save_screenshot(str(path)), path
        saved.append(path)

    browser.delete_all_cookies()
    browser.get(f"{live_server}/admin/login/?next=/admin/eventrelay/deadletter/")
    wait.until(ec.presence_of_element_located((By.ID, "id_username")))
    shot("login")
    browser.find_element(By.ID, "id_username").send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys("pw-operator")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    shot("dead-letters")
    page = browser.page_source
    assert all(i in page for i in dead_vtcdn + dead_infobip)

    browser.find_element(By.CSS_SELECTOR, '#changelist-filter a[href="?vendor=vtcdn"]').click()
    wait.until(ec.url_contains("vendor=vtcdn"))
    wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    shot("dead-letters-of-vtcdn")
    page = browser.page_source
    assert all(i in page for i in dead_vtcdn) and not any(i in page for i in dead_infobip)

    chosen = dead_vtcdn[0]
    browser.find_element(By.CSS_SELECTOR, f'input.action-select[value="{chosen}"]').click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("replay")
    browser.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert "1 dead letter(s) replayed" in message.text
    shot("replayed")

    wait_status(chosen, "delivered")
    for other in dead_vtcdn[1:] + dead_infobip:
        assert str(delivery(other).status) == "dead"
    browser.get(f"{live_server}/admin/eventrelay/delivery/{chosen}/change/")
    wait.until(ec.presence_of_element_located((By.ID, "attempt_history-group")))
    assert "delivered" in browser.find_element(By.CSS_SELECTOR, ".field-status").text
    shot("delivery-with-attempts")

    browser.get(f"{live_server}/admin/eventrelay/vendor/")
    wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    shot("vendors")

    assert [(e.object_id, e.action_flag) for e in _log()] == [(chosen, CHANGE)]
    assert all(p.stat().st_size > 10_000 for p in saved), saved
