"""The web console in a real browser (headless Chromium driven by Selenium): sign in with
the admin token, browse the demo connector, whitelist a device, set a value, and see it
through the REST API."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from gateway.testing.server import gateway_process

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium/chromedriver missing (scripts/bootstrap --system)",
)


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_console_end_to_end(tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    with gateway_process(tmp_path / "data") as (_proc, gw):
        base = f"http://127.0.0.1:{gw.ports['api']}"
        wait = WebDriverWait(browser, 15)
        browser.get(base + "/")
        assert browser.current_url.endswith("/console/")
        # A wrong token is refused; the right one signs in.
        token_box = wait.until(ec.visibility_of_element_located((By.ID, "token")))
        token_box.send_keys("not-the-token")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "login-error"), "not accepted"))
        token_box.clear()
        token_box.send_keys(gw.admin_token)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "connector-head"), "demo.m2.localhost"))
        assert "compiled" in browser.find_element(By.ID, "health").text
        # Whitelist a device from the Devices tab.
        ident = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#dev-add input")))
        ident.send_keys("console-dev-1")
        browser.find_element(By.CSS_SELECTOR, "#dev-add button").click()
        link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "console-dev-1")))
        link.click()
        # Set a value for the device and check it through the REST API.
        alias = wait.until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, "#setv input[name=alias]"))
        )
        alias.send_keys("data_out")
        browser.find_element(By.CSS_SELECTOR, "#setv input[name=value]").send_keys("reboot")
        browser.find_element(By.CSS_SELECTOR, "#setv button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "panel"), "reboot"))
        state = httpx.get(
            f"{gw.api}/connectors/demo/devices/console-dev-1/state", headers=gw.admin_headers
        ).json()
        assert state["data_out"]["set"] == "reboot"
        assert state["data_out"]["pending"] is True
        # The resources tab lists the demo connector's ExoSense resources.
        browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=resources]").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "panel"), "config_io"))
        browser.save_screenshot(str(tmp_path / "console.png"))
        # No script errors on the page (the refused sign-in's 401 is a network entry).
        errors = [
            e
            for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and e["source"] != "network"
        ]
        assert not errors, errors
