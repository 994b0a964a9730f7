"""The web console in headless Chromium (Selenium), against a live gateway with real devices
connected: paho-mqtt devices on MQTT/TLS and Exosite's murano-client (``gdc``) over HTTPS.
Every tab is clicked through and what the page shows is checked against the devices and the
REST API: sign-in, the overview's live counters, devices (search, filters, paging, CSV import
with its dry-run preview, add, lock, delete), the device page (values, the chart after writes,
a JSON set value acknowledged by the device, tags, a locked device shown offline), resources,
settings saved and read back, content upload and download, live logs (pause, export), events
(newest first, filters, paging) and integrations (violations by path, masked secrets, health,
sync).  Each test saves screenshots under test-artifacts/console/ and fails on browser console
errors; an axe-core pass over every tab at 1280 and 800 px requires zero serious violations.

One gateway, one browser and one set of devices serve the whole module (module fixtures):
starting them per test would cost minutes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import trio
import trustme

from gateway.errors import InvalidValue
from gateway.rules.identity import validate_identity
from gateway.testing.hosts import HostMap
from gateway.testing.pump_api import PumpAPI, open_pump_api
from gateway.testing.server import TestGateway, gateway_process

pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
AXE = ROOT / "tests" / "e2e" / "js" / "node_modules" / "axe-core" / "axe.min.js"
GDC = ROOT / ".venv-murano" / "bin" / "gdc"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
HOST = "demo.m2.localhost"
WAIT_S = 20.0  # the console refreshes every 3 s; a loaded machine needs slack


class Device:
    """A paho-mqtt 2 device on the MQTT/TLS port, authenticated by a pre-shared token.  It
    acknowledges every set value it is sent by writing it back (docs/protocol.md §4.3), as
    murano-client does, and records what it received."""

    def __init__(self, gw: TestGateway, token: str) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.username_pw_set("", token)
        self.c.tls_set_context(ssl.create_default_context(cafile=gw.ca))
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)
        self.connected = threading.Event()
        self.pushes: list[tuple[str, str]] = []
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect(HOST, gw.ports["mqtt_tls"], keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(15), "the device did not connect"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")  # $resource/<alias>/<µs>
        if len(parts) == 3 and parts[0] == "$resource":
            value = msg.payload.decode()
            self.pushes.append((parts[1], value))
            client.publish(f"$resource/{parts[1]}", value, qos=1)

    def write(self, alias: str, value: str) -> None:
        info = self.c.publish(f"$resource/{alias}", value, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def gdc(
    gw: TestGateway, workdir: Path, *args: str, token: str | None = None, uuid: str | None = None
) -> str:
    """Run Exosite's ``gdc http …`` against the TLS port; its stdout."""
    cmd = [str(GDC), "-H", f"https://{HOST}:{gw.ports['tls']}/", "-E", gw.ca]
    if token:
        cmd += ["-k", token]
    if uuid:
        cmd += ["-u", uuid]
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*cmd, "http", *args],
        capture_output=True,
        check=False,
        cwd=workdir,
        env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode().strip()


class PumpThread:
    """The pump-fleet REST API (gateway.testing.pump_api) served from its own Trio run in a
    thread, for the Integrations tab."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ready = threading.Event()
        self.pump: PumpAPI | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.stop_event: trio.Event | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the pump API did not start"

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop_event = trio.Event()
        async with open_pump_api(self.workdir) as pump:
            self.pump = pump
            self.ready.set()
            await self.stop_event.wait()

    def stop(self) -> None:
        assert self.token is not None
        assert self.stop_event is not None
        trio.from_thread.run_sync(self.stop_event.set, trio_token=self.token)
        self.thread.join(30)


class Console:
    """The browser on the console, with the waits and checks the tests share."""

    def __init__(self, driver: WebDriver, gw: TestGateway, downloads: Path) -> None:
        self.d = driver
        self.gw = gw
        self.base = f"http://127.0.0.1:{gw.ports['api']}/console/"
        self.downloads = downloads
        self.allowed_network_errors: list[str] = []

    # -- navigation and waiting ------------------------------------------------------------

    def open(self, place: str) -> None:
        """Go to ``#/<place>`` (a same-document navigation once the console is loaded)."""
        self.d.get(self.base + "#/" + place)

    def wait(
        self, predicate: Callable[[WebDriver], Any], what: str, timeout: float = WAIT_S
    ) -> Any:
        def safe(d: WebDriver) -> Any:
            try:
                return predicate(d)
            except (StaleElementReferenceException, WebDriverException, IndexError, ValueError):
                return False

        return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(safe, f"waiting for {what}")

    def el(self, css: str) -> WebElement:
        """The element, scrolled to the middle of the window (clear of sticky bars)."""

        def find(d: WebDriver) -> WebElement:
            found = d.find_element(By.CSS_SELECTOR, css)
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", found)
            return found

        return self.wait(find, css)

    def els(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return str(self.el(css).text)

    def wait_text(self, css: str, needle: str, timeout: float = WAIT_S) -> str:
        return str(
            self.wait(
                lambda d: (t := d.find_element(By.CSS_SELECTOR, css).text) and needle in t and t,
                f"{needle!r} in {css}",
                timeout,
            )
        )

    def visible(self, css: str) -> bool:
        found = self.els(css)
        return bool(found) and found[0].is_displayed()

    def click(self, css: str) -> None:
        """Click the element once it is enabled (again if the page redrew it meanwhile)."""

        def click(d: WebDriver) -> bool:
            found = d.find_element(By.CSS_SELECTOR, css)
            if not found.is_enabled():
                return False
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", found)
            found.click()
            return True

        self.wait(click, f"{css} clicked")

    def press(self, label: str, within: str = "#main") -> None:
        """Click the button labelled ``label`` (again if the page redrew it meanwhile)."""

        def click(d: WebDriver) -> bool:
            for b in d.find_elements(By.CSS_SELECTOR, f"{within} button, {within} a.button"):
                if b.text.strip() == label and b.is_displayed() and b.is_enabled():
                    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", b)
                    b.click()
                    return True
            return False

        self.wait(click, f"button {label!r}")

    def fill(self, css: str, value: str) -> None:
        box = self.el(css)
        box.clear()
        box.send_keys(value)

    def set_value(self, css: str, value: str) -> None:
        """Set a (long or multi-line) value by script and tell the page it changed."""
        self.d.execute_script(
            "const e = document.querySelector(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event('input', {bubbles: true}));"
            "e.dispatchEvent(new Event('change', {bubbles: true}));",
            css,
            value,
        )

    def confirm(self) -> None:
        """Accept the console's confirmation dialog."""
        self.el("dialog.confirm button.danger").click()
        self.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog.confirm"), "dialog closed")

    def place(self) -> str:
        return str(self.d.execute_script("return location.hash"))

    # -- evidence ----------------------------------------------------------------------

    def shot(self, name: str) -> Path:
        """Save a screenshot of the whole page under test-artifacts/console/."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        metrics = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        data = self.d.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": min(size["height"], 6000),
                    "scale": 1,
                },
            },
        )
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def console_errors(self) -> list[dict[str, Any]]:
        """Browser console errors since the last call, minus network errors a test said to
        expect (a refused sign-in, a document refused on purpose)."""
        out = []
        for entry in self.d.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            if entry["source"] == "network" and any(
                s in entry["message"] for s in self.allowed_network_errors
            ):
                continue
            out.append(entry)
        return out

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's WCAG 2.1 A/AA violations on the current page."""
        if not self.d.execute_script("return typeof window.axe !== 'undefined'"):
            self.d.execute_script(AXE.read_text())
        result = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a',"
            " 'wcag21aa']}}).then((r) => done(r.violations.map((v) => ({id: v.id, impact:"
            " v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' '))"
            "})))).catch((e) => done([{id: 'axe-error', impact: 'critical', help: String(e),"
            " nodes: []}]));"
        )
        return list(result)

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than the window (0: no sideways scroll)."""
        return int(
            self.d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
        )


def start_browser(profile: Path, downloads: Path) -> WebDriver:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.set_script_timeout(60)
    return driver


class World:
    """The live gateway and what is connected to it."""

    def __init__(self, gw: TestGateway, workdir: Path) -> None:
        self.gw = gw
        self.workdir = workdir
        self.api = httpx.Client(base_url=gw.api, headers=gw.admin_headers, timeout=15)
        self.devices: dict[str, Device] = {}
        self.tokens: dict[str, str] = {}

    def provision(self, identity: str, **tags: str) -> str:
        token = secrets.token_hex(20)
        r = self.api.post(
            "/connectors/demo/devices",
            json={
                "identity": identity,
                "auth": {"type": "token", "key": token},
                "tags": [{"name": k, "value": v} for k, v in tags.items()],
            },
        )
        r.raise_for_status()
        self.tokens[identity] = token
        return token

    def connect(self, identity: str) -> Device:
        dev = Device(self.gw, self.tokens[identity])
        self.devices[identity] = dev
        return dev

    def populate(self) -> None:
        """Resources, sixty whitelisted devices, two paho devices writing channels and a
        temperature, one murano-client device over HTTPS."""
        self.api.post(
            "/connectors/demo/resources",
            json={"alias": "temperature", "format": "number", "unit": "°C"},
        ).raise_for_status()
        rows = "".join(f"fleet-{i:03d},one\n" for i in range(60))
        r = self.api.post(
            "/connectors/demo/devices/import",
            content="ID,tag:batch\n" + rows,
            headers={"Content-Type": "text/csv"},
        )
        r.raise_for_status()
        assert r.json()["created"] == 60
        self.provision("paho-1", site="north")
        self.provision("paho-2", site="south")
        one, two = self.connect("paho-1"), self.connect("paho-2")
        for i in range(6):
            one.write("data_in", json.dumps({"001": 20 + i, "002": 50 - i}))
            one.write("temperature", str(21 + i / 2))
            two.write("data_in", json.dumps({"001": 5 + i}))
        token = gdc(self.gw, self.workdir / "gdc", "activate", uuid="gdc-1")
        assert len(token) == 40, token
        self.tokens["gdc-1"] = token
        for v in (9.5, 10.25):
            out = gdc(
                self.gw,
                self.workdir / "gdc",
                "write",
                "data_in",
                json.dumps({"001": v}),
                token=token,
            )
            assert out.startswith("[204]"), out

    def close(self) -> None:
        for dev in self.devices.values():
            dev.stop()
        self.api.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll a condition outside the browser (the REST API, a device's inbox)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def iter_downloads(folder: Path, suffix: str) -> Iterator[Path]:
    return (p for p in folder.iterdir() if p.name.endswith(suffix))


DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="chromium/chromedriver missing (scripts/bootstrap --system)",
    ),
    pytest.mark.skipif(
        not GDC.exists(), reason="murano-client missing: scripts/bootstrap --system"
    ),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hosts: HostMap) -> Iterator[World]:
    if not hosts.map(HOST):  # paho and gdc connect by name (SNI, certificate check)
        pytest.skip(f"{HOST} cannot be mapped to 127.0.0.1 (needs root)")
    tmp = tmp_path_factory.mktemp("console")
    env = {**os.environ, "GATEWAY_LOG_LEVEL": "WARNING"}
    with gateway_process(tmp / "data", env=env) as (_proc, gw):
        w = World(gw, tmp)
        try:
            w.populate()
            yield w
        finally:
            w.close()


@pytest.fixture(scope="module")
def ui(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("browser")
    downloads = tmp / "downloads"
    downloads.mkdir()
    driver = start_browser(tmp / "profile", downloads)
    console = Console(driver, world.gw, downloads)
    try:
        yield console
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def no_console_errors(ui: Console, request: pytest.FixtureRequest) -> Iterator[None]:
    """No script errors in the browser during the test (network errors only where the test
    provoked them on purpose).  The page as the test left it is saved as ``last-<test>``."""
    ui.console_errors()  # drain what came before
    ui.allowed_network_errors = []
    yield
    ui.shot(f"last-{request.node.name}")
    errors = ui.console_errors()
    assert not errors, errors


@pytest.fixture
def signed_in(ui: Console, world: World) -> Console:
    if not ui.d.execute_script("return !!sessionStorage.getItem('gwToken')"):
        ui.d.get(ui.base)
        ui.fill("#token", world.gw.admin_token)
        ui.click("#login-form button")
        ui.el("#overview-cards")
    return ui


def test_sign_in_shows_only_the_form_until_the_token_is_accepted(ui: Console, world: World) -> None:
    ui.d.get(world.gw.api.removesuffix("/api/v1") + "/")
    assert ui.d.current_url.endswith("/console/")
    ui.el("#token")
    # Signed out: the sign-in form and nothing else (no tabs, no connector list).
    assert ui.visible("#login")
    assert not ui.visible("#app")
    assert not ui.visible("#sidebar")
    assert not ui.els(".tabs")
    ui.shot("01-signed-out")
    ui.allowed_network_errors = ["/api/v1/connectors - Failed to load resource"]
    ui.fill("#token", "not-the-token")
    ui.click("#login-form button")
    ui.wait_text("#login-error", "not accepted")
    assert not ui.visible("#app")
    ui.fill("#token", world.gw.admin_token)
    ui.click("#login-form button")
    ui.wait_text("#overview-cards", "Demo connector")
    assert "compiled" in ui.text("#health")
    assert ui.visible("#sidebar")


def test_overview_shows_live_counters(signed_in: Console, world: World) -> None:
    ui = signed_in
    ui.open("")
    card = '.card[data-connector="demo"]'
    total = world.api.get("/connectors/demo/stats").json()["devices"]["total"]
    ui.wait_text(f'{card} [data-counter="total"]', str(total))
    ui.wait(lambda d: int(ui.text(f'{card} [data-counter="online"]')) >= 2, "devices online")
    assert "mqtt" in ui.text(f'{card} [data-counter="connections"]')
    # Writes while the page watches: writes/s goes above zero at the next refresh.
    dev = world.devices["paho-1"]
    deadline = time.monotonic() + 20
    while float(ui.text(f'{card} [data-counter="writes"]')) == 0.0:
        assert time.monotonic() < deadline, "writes/s stayed at 0"
        for i in range(5):
            dev.write("temperature", str(22 + i / 10))
        time.sleep(0.5)
    ui.wait(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, f"{card} svg.spark path")) >= 2, "sparklines"
    )
    ui.shot("02-overview")


def test_devices_search_filter_sort_and_page(signed_in: Console, world: World) -> None:
    ui = signed_in
    ui.open("c/demo/devices")
    counts = world.api.get("/connectors/demo/stats").json()["devices"]
    ui.wait_text('#dev-counts [data-count="total"]', f"{counts['total']} devices")
    ui.wait_text('#dev-counts [data-count="online"]', "online")
    # Search by identity prefix.
    ui.fill("#dev-filter input[name=q]", "fleet-01")
    ui.click("#dev-filter button[type=submit]")
    ui.wait(lambda d: len(ui.els("#dev-table tbody tr")) == 10, "ten fleet-01x devices")
    assert "q=fleet-01" in ui.place()
    # The place survives a page refresh.
    ui.d.refresh()
    ui.wait(lambda d: len(ui.els("#dev-table tbody tr")) == 10, "the same rows after refresh")
    assert ui.el("#dev-filter input[name=q]").get_attribute("value") == "fleet-01"
    # Status filter: the connected devices.
    ui.open("c/demo/devices?status=online")
    ui.wait(
        lambda d: (
            {r.get_attribute("data-identity") for r in ui.els("#dev-table tbody tr")}
            == {"paho-1", "paho-2"}
        ),
        "the two online devices",
    )
    # Tag filter with cursor paging (25 a page: 60 devices = 3 pages).
    ui.open("c/demo/devices?tag=batch:one&limit=25")
    ui.wait(lambda d: len(ui.els("#dev-table tbody tr")) == 25, "first page")
    first = ui.els("#dev-table tbody tr")[0].get_attribute("data-identity")
    assert first == "fleet-000"
    ui.click("#dev-next")
    ui.wait(
        lambda d: ui.els("#dev-table tbody tr")[0].get_attribute("data-identity") == "fleet-025",
        "page 2",
    )
    assert "cursor=" in ui.place()
    ui.click("#dev-next")
    ui.wait(lambda d: len(ui.els("#dev-table tbody tr")) == 10, "last page")
    assert not ui.el("#dev-next").is_enabled()
    ui.click("#dev-prev")
    ui.wait(
        lambda d: ui.els("#dev-table tbody tr")[0].get_attribute("data-identity") == "fleet-025",
        "back to page 2",
    )
    ui.d.refresh()  # a refresh keeps the page (the cursor is in the URL)
    ui.wait(
        lambda d: ui.els("#dev-table tbody tr")[0].get_attribute("data-identity") == "fleet-025",
        "page 2 after refresh",
    )
    # Sort: most recently seen first.
    ui.open("c/demo/devices?sort=-lastseen")
    world.devices["paho-2"].write("data_in", json.dumps({"001": 1}))
    ui.wait(
        lambda d: ui.els("#dev-table tbody tr")[0].get_attribute("data-identity") == "paho-2",
        "paho-2 first",
    )
    ui.shot("03-devices")


def test_add_lock_and_delete_from_the_list(signed_in: Console, world: World) -> None:
    ui = signed_in
    ui.open("c/demo/devices?q=added")
    ui.el("#add-one summary").click()
    ui.fill("#add-identity", "bad identity")
    ui.wait_text("#add-identity-check", "printable ASCII")
    ui.fill("#add-identity", "added-1")
    ui.wait_text("#add-identity-check", "valid identity")
    ui.fill("#dev-add textarea[name=tags]", "site=east")
    ui.click("#dev-add button[type=submit]")
    row = '#dev-table tr[data-identity="added-1"]'
    ui.wait_text(row, "site=east")
    assert world.api.get("/connectors/demo/devices/added-1").json()["tags"] == [
        {"name": "site", "value": "east"}
    ]
    ui.press("Lock", row)
    ui.wait_text(row, "locked")
    assert world.api.get("/connectors/demo/devices/added-1").json()["locked"] is True
    ui.press("Unlock", row)
    ui.wait(lambda d: "locked" not in d.find_element(By.CSS_SELECTOR, row).text, "unlocked")
    ui.press("Delete", row)
    ui.confirm()
    ui.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, row), "row gone")
    assert world.api.get("/connectors/demo/devices/added-1").status_code == 404


def test_csv_import_previews_row_errors_then_imports(signed_in: Console, world: World) -> None:
    ui = signed_in
    ui.open("c/demo/devices")
    ui.el("#add-many summary").click()
    csv = "ID,tag:site\ncsv-001,east\ncsv-002,west\nbad id,east\ncsv-001,east\npaho-1,north\n"
    ui.set_value("#dev-import textarea[name=csv]", csv)
    ui.click("#csv-preview-btn")
    summary = ui.wait_text("#csv-summary", "rows checked")
    assert "3 with errors" in summary
    assert "would create 0" in summary
    errors = {
        r.find_element(By.CSS_SELECTOR, "td").text: r.text
        for r in ui.els("#csv-preview tr.row-error")
    }
    assert set(errors) == {"4", "5", "6"}  # lines of the bad rows
    assert "printable ASCII" in errors["4"]
    assert "duplicate identity in the file" in errors["5"]
    assert "already exists" in errors["6"]
    assert not ui.el("#csv-import").is_enabled()
    ui.shot("04-csv-preview")
    # Import the good rows.
    ui.el("#dev-import input[name=all_or_nothing]").click()
    ui.click("#csv-preview-btn")
    ui.wait_text("#csv-summary", "would create 2")
    ui.click("#csv-import")
    ui.wait_text("#csv-summary", "2 devices created")
    dev = world.api.get("/connectors/demo/devices/csv-002").json()
    assert dev["tags"] == [{"name": "site", "value": "west"}]
    assert world.api.get("/connectors/demo/devices/csv-003").status_code == 404


def test_device_page_values_chart_set_value_and_tags(signed_in: Console, world: World) -> None:
    ui = signed_in
    dev = world.devices["paho-1"]
    ui.open("c/demo/devices/paho-1")
    ui.wait_text("#dev-title", "paho-1")
    ui.wait_text(".device-head", "online")
    assert ui.text("#dev-lastip") == "127.0.0.1"
    # Reported values and their times.
    ui.wait_text('#dev-state tr[data-alias="data_in"]', '"001"')
    assert ui.el('#dev-state tr[data-alias="data_in"] time').get_attribute("datetime")
    # One chart per numeric value or JSON channel, from the event log.
    ui.wait(
        lambda d: (
            {f.get_attribute("data-series") for f in ui.els("#dev-charts figure")}
            >= {"data_in.001", "data_in.002", "temperature"}
        ),
        "charts of data_in.001, data_in.002 and temperature",
    )
    before = len(ui.els('#dev-charts figure[data-series="data_in.001"] circle'))
    dev.write("data_in", json.dumps({"001": 99, "002": 1}))
    ui.wait(
        lambda d: len(ui.els('#dev-charts figure[data-series="data_in.001"] circle')) == before + 1,
        "the new point on the chart (auto-refresh)",
    )
    axis = ui.els('#dev-charts figure[data-series="data_in.001"] svg text.axis')
    assert len(axis) == 5  # three values up the side, the first and last time below
    caption = ui.text('#dev-charts figure[data-series="data_in.001"] figcaption')
    assert "last 99" in caption
    # only this device's values: as many as its own data_in writes with a channel 001
    own = world.api.get(
        "/connectors/demo/events",
        params={"before": -1, "limit": 1000, "identity": "paho-1", "type": "data_in"},
    ).json()["items"]
    n = sum("001" in p["values"].get("data_in", "") for e in own for p in e["payload"])
    assert f"· {n} values" in caption, (caption, n)
    # Set config_io with the JSON editor; the device receives and acknowledges it.
    Select(ui.el("#setv select[name=alias]")).select_by_value("config_io")
    assert ui.el("#use-json").is_selected()
    ui.set_value("#set-json", '{"channels": {"001": {"display_name": "Flow"}}')
    ui.wait_text("#json-check", "not JSON")
    ui.set_value("#set-json", '{"channels": {"001": {"display_name": "Flow"}}}')
    ui.wait_text("#json-check", "valid JSON")
    ui.click("#setv button[type=submit]")
    wait_until(lambda: any(a == "config_io" for a, _ in dev.pushes), "the push to the device")
    _alias, value = next(p for p in dev.pushes if p[0] == "config_io")
    assert json.loads(value) == {"channels": {"001": {"display_name": "Flow"}}}
    # The device wrote it back: no longer pending.
    ui.wait_text('#dev-state tr[data-alias="config_io"]', "no")
    state = world.api.get("/connectors/demo/devices/paho-1/state").json()
    assert state["config_io"]["pending"] is False
    # Tags.
    ui.fill("#addtag input[name=name]", "floor")
    ui.fill("#addtag input[name=value]", "2")
    ui.click("#addtag button")
    ui.wait_text("#dev-tags", "floor=2")
    ui.el('#dev-tags button[aria-label="Remove tag floor=2"]').click()
    ui.wait(lambda d: "floor=2" not in ui.text("#dev-tags"), "tag removed")
    # The device's own events, newest first, and its live log.
    ui.wait_text("#dev-events", "data_in")
    assert "paho-2" not in ui.text("#dev-events")
    dev.write("temperature", "23.5")
    ui.wait_text(".log.compact", "data_in")
    ui.shot("05-device-page")


def test_locked_device_is_shown_offline_and_refusals_counted(
    signed_in: Console, world: World
) -> None:
    ui = signed_in
    ui.open("c/demo/devices/paho-2")
    ui.wait_text(".device-head", "online")
    ui.click("#lock")
    ui.wait_text(".device-head", "offline")
    ui.wait_text(".device-head", "locked")
    assert world.api.get("/connectors/demo/devices/paho-2").json()["online"] is False
    # paho reconnects on its own and is refused: the header counts it by reason, and the
    # event log has the refusal with its reason code (the header's pill leads there).
    ui.wait_text('#head-counters [data-counter="refused"]', "locked")
    ui.shot("06-locked-device")
    ui.el('#head-counters [data-counter="refused"] a').click()
    ui.wait(lambda d: "type=connection_refused" in ui.place(), "the refusal events")
    ui.wait_text('#ev-table tr[data-type="connection_refused"]', "locked")
    ui.open("c/demo/devices/paho-2")
    ui.click("#lock")  # unlock
    ui.wait(lambda d: "locked" not in ui.text(".device-head"), "unlocked")
    ui.wait_text(".device-head", "online", timeout=30)  # paho's next retry gets in


def test_resources_tab_defines_edits_and_deletes(signed_in: Console, world: World) -> None:
    ui = signed_in
    ui.open("c/demo/resources")
    ui.wait_text("#res-table", "config_io")
    ui.fill("#addres input[name=alias]", "pressure")
    Select(ui.el("#addres select[name=format]")).select_by_value("number")
    ui.fill("#addres input[name=unit]", "bar")
    ui.click("#addres button[type=submit]")
    row = '#res-table tr[data-alias="pressure"]'
    ui.wait_text(row, "number (bar)")
    ui.press("Edit", row)
    ui.el("#addres input[name=settable]").click()
    ui.fill("#addres input[name=allowed]", "1, 2, 3")
    ui.click("#addres button[type=submit]")
    ui.wait_text(row, "1, 2, 3")
    res = world.api.get("/connectors/demo/resources/pressure").json()
    assert res["settable"] is True
    assert res["allowed"] == [1, 2, 3]
    assert res["unit"] == "bar"
    ui.shot("07-resources")
    ui.press("Delete", row)
    ui.confirm()
    ui.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, row), "resource gone")


def test_settings_forms_save_and_read_back(
    signed_in: Console, world: World, tmp_path: Path
) -> None:
    ui = signed_in
    # A connector of its own, made with the sidebar form.
    ui.open("")
    ui.el(".new-connector summary").click()
    ui.fill("#nc-name", "Settings test")
    ui.fill("#nc-id", "settingsco")
    ui.click("#new-connector button")
    ui.wait(lambda d: ui.place() == "#/c/settingsco/devices", "the new connector")
    ui.el('.tabs a[data-tab="settings"]').click()
    ui.el("#settings-form")
    # Identity format with the live validator.
    Select(ui.el("select[name=identity_type]")).select_by_value("base16")
    ui.fill("input[name=prefix]", "AB")
    Select(ui.el("select[name=casing]")).select_by_value("upper")
    ui.fill("input[name=length]", "4")
    ui.fill("#try-identity", "AB12")
    ui.wait_text("#try-verdict", "identity must have 4 characters after the prefix")
    ui.fill("#try-identity", "AB12ff")
    ui.wait_text("#try-verdict", "identity must be upper case")
    ui.fill("#try-identity", "AB12FF")
    ui.wait_text("#try-verdict", "AB12FF is a valid identity")
    # Provisioning, IP whitelist, dev mode, CA upload.
    Select(ui.el("select[name=auth_type]")).select_by_value("password")
    ui.el("input[name=presenter_identity]").click()  # off
    ui.el("input[name=devmode]").click()  # on
    ui.el("input[name=ip_enabled]").click()
    ui.set_value("#ip-allowed", "127.0.0.1\n999.1.1.1")
    ui.wait_text("#ip-check", "not an address or network: 999.1.1.1")
    ui.set_value("#ip-allowed", "127.0.0.1\n10.0.0.0/8")
    ca = tmp_path / "device-ca.pem"
    ca.write_text(trustme.CA().cert_pem.bytes().decode())
    ui.el(".pem input[type=file]").send_keys(str(ca))  # the client CA's upload
    ui.wait(
        lambda d: (
            "BEGIN CERTIFICATE" in (ui.el("textarea[name=client_ca]").get_attribute("value") or "")
        ),
        "CA read",
    )
    ui.el("input[name=pki_enabled]").click()
    ui.click("#save-settings")
    ui.wait_text("#settings-status", "saved and read back")
    ui.shot("08-settings")
    s = world.api.get("/connectors/settingsco/settings").json()
    assert s["identity_format"] == {
        "type": "base16",
        "prefix": "AB",
        "options": {"casing": "upper", "length": 4},
    }
    assert s["provisioning"]["auth_type"] == "password"
    assert s["provisioning"]["presenter_identity"] is False
    assert s["provisioning"]["ip_whitelisting"] == {
        "enabled": True,
        "allowed": ["127.0.0.1", "10.0.0.0/8"],
    }
    assert s["protocol"]["devmode"] is True
    assert s["pki"]["enabled"] is True
    assert s["pki"]["client_ca"].strip() == ca.read_text().strip()
    # Read back after a page refresh: the forms show what the gateway stored.
    ui.d.refresh()
    ui.el("#settings-form")
    assert Select(ui.el("select[name=identity_type]")).first_selected_option.text == "base16"
    assert ui.el("input[name=prefix]").get_attribute("value") == "AB"
    assert ui.el("input[name=length]").get_attribute("value") == "4"
    assert (
        Select(ui.el("select[name=auth_type]")).first_selected_option.get_attribute("value")
        == "password"
    )
    assert not ui.el("input[name=presenter_identity]").is_selected()
    assert ui.el("input[name=devmode]").is_selected()
    assert ui.el("#ip-allowed").get_attribute("value") == "127.0.0.1\n10.0.0.0/8"
    # A setting the gateway refuses is reported and nothing changes.
    ui.set_value("textarea[name=client_ca]", "")
    ui.click("#save-settings")
    ui.wait_text("#settings-status", "pki.enabled requires pki.client_ca")
    assert world.api.get("/connectors/settingsco/settings").json()["pki"]["client_ca"]
    ui.allowed_network_errors = ["/settings - Failed to load resource"]


def test_identity_validator_matches_the_gateway(signed_in: Console) -> None:
    """The Settings tab's live validator (identity.js) says what the gateway says."""
    ui = signed_in
    rng = random.Random(7)
    alphabet = "0123456789abcdefABCDEF:-/# xyzé"
    cases = []
    for kind in ("opaque", "base10", "base16", "mac:48", "mac:48-nosep", "uuid:v4"):
        for casing in ("mixed", "upper", "lower"):
            for prefix, length in (("", 0), ("dev-", 0), ("X", 4)):
                for _ in range(12):
                    n = rng.choice([0, 1, 4, 5, 12, 17, 36, 40])
                    body = "".join(rng.choice(alphabet) for _ in range(n))
                    ident = (prefix if rng.random() < 0.8 else "") + body
                    cases.append([ident, kind, prefix, casing, length])
    cases += [
        ["aa:bb:cc:dd:ee:ff", "mac:48", "", "lower", 0],
        ["3f2b8c1e-7d4a-4b6e-9c2d-1a2b3c4d5e6f", "uuid:v4", "", "mixed", 0],
        ["3f2b8c1e-7d4a-5b6e-9c2d-1a2b3c4d5e6f", "uuid:v4", "", "mixed", 0],
        ["x" * 129, "opaque", "", "mixed", 0],
    ]
    got = ui.d.execute_async_script(
        "const [cases, done] = arguments;"
        "import('./identity.js').then((m) => done(cases.map(([i, type, prefix, casing, length]) =>"
        " m.identityProblem(i, {type, prefix, options: {casing, length}}))));",
        cases,
    )
    for (ident, kind, prefix, casing, length), js in zip(cases, got, strict=True):
        try:
            validate_identity(ident, kind, prefix, casing, length)
            want = None
        except InvalidValue as exc:
            want = exc.message
        assert js == want, (ident, kind, prefix, casing, length)


def test_content_upload_with_progress_download_and_delete(
    signed_in: Console, world: World, tmp_path: Path
) -> None:
    ui = signed_in
    blob = os.urandom(300_000)
    src = tmp_path / "firmware-v2.bin"
    src.write_bytes(blob)
    ui.open("c/demo/content")
    ui.el("#content-table")
    ui.el("#upload input[type=file]").send_keys(str(src))
    assert ui.el("#upload input[name=id]").get_attribute("value") == "firmware-v2.bin"
    ui.fill("#upload input[name=description]", "Release 2")
    ui.click("#upload button[type=submit]")
    row = '#content-table tr[data-content="firmware-v2.bin"]'
    ui.wait_text(row, "Release 2")
    assert ui.el("#upload-progress").get_attribute("value") == "100"
    assert "293 KiB" in ui.text(row)
    ui.shot("09-content")
    ui.press("Download", row)
    target = ui.downloads / "firmware-v2.bin"
    wait_until(lambda: target.exists() and target.stat().st_size == len(blob), "the download")
    assert target.read_bytes() == blob
    ui.press("Delete", row)
    ui.confirm()
    ui.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, row), "content gone")
    assert world.api.get("/connectors/demo/content").json()["items"] == []


def test_logs_follow_filter_pause_and_export(signed_in: Console, world: World) -> None:
    ui = signed_in
    dev = world.devices["paho-1"]
    ui.open("c/demo/logs")
    ui.fill("#log-filter input[name=identity]", "paho-1")
    ui.click("#log-filter button[type=submit]")
    ui.wait(lambda d: "identity=paho-1" in ui.place(), "the filter in the URL")
    ui.wait_text(".log-state", "following")
    dev.write("temperature", "24.5")
    world.devices["paho-2"].write("data_in", json.dumps({"001": 3}))
    ui.wait_text(".log", "temperature=")
    assert "paho-2" not in ui.text(".log")
    ui.press("Pause")
    lines = len(ui.els(".log .line"))
    dev.write("temperature", "25.5")
    ui.wait_text(".log-state", "paused, 1 new")
    assert len(ui.els(".log .line")) == lines
    ui.press("Resume")
    ui.wait(lambda d: len(ui.els(".log .line")) == lines + 1, "the held line shown")
    ui.shot("10-logs")
    ui.press("Export")

    def exported() -> list[dict[str, object]]:
        files = [p for p in ui.downloads.iterdir() if p.name.startswith("logs-demo-")]
        if not files or files[0].name.endswith(".crdownload"):
            return []
        return [json.loads(line) for line in files[0].read_text().splitlines()]

    wait_until(lambda: len(exported()) == lines + 1, "the exported log")
    assert all(r["identity"] == "paho-1" for r in exported())


def test_events_newest_first_with_filters_and_paging(signed_in: Console, world: World) -> None:
    ui = signed_in
    for i in range(30):  # more than a page of paho-1's writes, whatever ran before
        world.devices["paho-1"].write("data_in", json.dumps({"001": i}))
    ui.open("c/demo/events")
    ui.wait(lambda d: len(ui.els("#ev-table tbody tr")) == 50, "a page of events")
    seqs = [int(r.get_attribute("data-seq")) for r in ui.els("#ev-table tbody tr")]
    assert seqs == sorted(seqs, reverse=True)
    newest = world.api.get("/connectors/demo/events", params={"before": -1, "limit": 1}).json()
    assert seqs[0] == newest["items"][0]["seq"]
    # A new event appears on top (auto-refresh follows the first page).
    world.devices["paho-2"].write("data_in", json.dumps({"001": 77}))
    ui.wait(
        lambda d: int(ui.els("#ev-table tbody tr")[0].get_attribute("data-seq")) > seqs[0],
        "the new event on top",
    )
    # Filters: identity and type.
    ui.fill("#ev-filter input[name=identity]", "paho-1")
    ui.fill("#ev-filter input[name=type]", "data_in")
    Select(ui.el("#ev-filter select[name=limit]")).select_by_value("25")
    ui.click("#ev-filter button[type=submit]")
    ui.wait(
        lambda d: "identity=paho-1" in ui.place() and "type=data_in" in ui.place(),
        "filters in the URL",
    )
    ui.wait(
        lambda d: (
            {
                (r.get_attribute("data-type"), r.find_elements(By.CSS_SELECTOR, "td")[3].text)
                for r in ui.els("#ev-table tbody tr")
            }
            == {("data_in", "paho-1")}
        ),
        "only paho-1's writes",
    )
    # Paging backwards.
    first_page = [r.get_attribute("data-seq") for r in ui.els("#ev-table tbody tr")]
    ui.click("#ev-older")
    ui.wait(lambda d: "before=" in ui.place(), "older page")
    ui.wait(
        lambda d: ui.els("#ev-table tbody tr")[0].get_attribute("data-seq") not in first_page,
        "older rows",
    )
    older = [int(r.get_attribute("data-seq")) for r in ui.els("#ev-table tbody tr")]
    assert max(older) < min(int(s) for s in first_page)
    ui.shot("11-events")
    # IP filter (every device here is 127.0.0.1; another address has nothing).
    ui.open("c/demo/events?ip=192.0.2.1")
    ui.wait_text("#ev-table", "no events")


def test_integrations_violations_config_health_and_sync(
    signed_in: Console, world: World, tmp_path: Path
) -> None:
    ui = signed_in
    pump = PumpThread(tmp_path / "pump")
    try:
        api = pump.pump
        assert api is not None
        ui.open("c/demo/integrations")
        ui.el("#int-add")
        ui.fill("#int-add input[name=name]", "pumps")
        # A broken document: every violation, by JSON path.
        broken = (
            (DATA / "pump-fleet-basic.yaml")
            .read_text()
            .replace("      description: The list of available assets.\n", "")
            .replace("basePath: /api/v1.0", "basePath: api")
        )
        ui.set_value("#int-add textarea[name=document]", broken)
        ui.click("#int-validate")
        ui.wait_text("#int-result", "violation")
        paths = [c.text for c in ui.els("#int-result td code")]
        assert paths == ["$.basePath", '$.paths["/assets"].get.description'], paths
        ui.shot("12-integration-violations")
        # The real document; then its page.
        ui.set_value(
            "#int-add textarea[name=document]", (DATA / "pump-fleet-basic.yaml").read_text()
        )
        ui.click("#int-add button[type=submit]")
        ui.wait(lambda d: ui.place() == "#/c/demo/integrations/pumps", "the integration's page")
        ui.wait_text("#int-summary", "Missing configuration: username, password")
        # Configuration form from x-exosite-config-parameters; the secret is masked.
        secret = ui.el("#int-config input[name=password]")
        assert secret.get_attribute("type") == "password"
        ui.fill("#int-config input[name=username]", api.fleet.username)
        secret.send_keys(api.fleet.password)
        ui.click("#int-config button[type=submit]")
        ui.wait(lambda d: "Missing configuration" not in ui.text("#int-summary"), "config complete")
        ui.wait(lambda d: "a value is set" in ui.text("#int-config"), "the secret shown as set")
        assert api.fleet.password not in ui.d.page_source
        assert ui.el("#int-config input[name=password]").get_attribute("value") == ""
        # Settings: where the API is and which CA to trust.
        ui.d.find_element(By.XPATH, "//summary[text()='Settings']").click()
        ui.fill("#int-settings input[name=host]", api.host)
        ui.fill("#int-settings input[name=sync_interval_s]", "0")  # runs only when asked
        ui.fill("#int-settings input[name=fetch_interval_s]", "0")
        ui.set_value("#int-settings textarea[name=ca_bundle]", api.ca_pem)
        ui.click("#int-settings button[type=submit]")
        ui.wait(
            lambda d: (
                world.api.get("/connectors/demo/integrations/pumps").json()["settings"]["host"]
                == api.host
            ),
            "settings saved",
        )
        # Health now and its history.
        ui.click("#int-probe")
        ui.wait_text("#int-health", "healthy")
        ui.wait(lambda d: len(ui.els("#int-health tbody tr")) >= 1, "health history")
        # Sync: the report says three assets became devices.
        ui.press("Run now", '.job[data-job="sync"]')
        ui.wait_text('.job[data-job="sync"] .last-run', "ok: 3 seen, 3 created")
        ui.wait_text('.job[data-job="sync"] tbody tr', "api")
        assert "manual only" in ui.text('.job[data-job="sync"] h4')
        ui.shot("13-integration")
    finally:
        pump.stop()


TABS = [
    "",
    "c/demo/devices",
    "c/demo/devices/paho-1",
    "c/demo/resources",
    "c/demo/settings",
    "c/demo/content",
    "c/demo/logs",
    "c/demo/events",
    "c/demo/integrations",
]


@pytest.mark.skipif(not AXE.exists(), reason="axe-core missing: scripts/bootstrap (needs npm)")
@pytest.mark.parametrize("width", [1280, 800])
def test_every_tab_is_accessible_and_fits(signed_in: Console, width: int) -> None:
    """axe-core (WCAG 2.1 A/AA, including colour contrast): no serious or critical
    violation on any tab; at 800 px no page scrolls sideways."""
    ui = signed_in
    ui.d.set_window_size(width, 900)
    try:
        report = {}
        for place in TABS:
            ui.open(place)
            ui.el("#panel")
            ui.wait(
                lambda d: not d.find_elements(By.CSS_SELECTOR, "#panel:empty"), "the panel drawn"
            )
            time.sleep(0.3)  # let the view's first fetches land
            bad = [v for v in ui.axe() if v["impact"] in ("serious", "critical")]
            if bad:
                report[place or "overview"] = bad
            assert ui.horizontal_overflow() <= 0, f"{place} scrolls sideways at {width}px"
            ui.shot(f"20-{width}-{place.replace('/', '_') or 'overview'}")
        assert not report, json.dumps(report, indent=1)
    finally:
        ui.d.set_window_size(1280, 900)


def test_keyboard_moves_between_tabs(signed_in: Console) -> None:
    ui = signed_in
    ui.open("c/demo/devices")
    first = ui.el('.tabs a[data-tab="devices"]')
    first.send_keys(Keys.ARROW_RIGHT)
    focused = ui.d.switch_to.active_element
    assert focused.get_attribute("data-tab") == "resources"
    focused.send_keys(Keys.ENTER)
    ui.wait(lambda d: ui.place() == "#/c/demo/resources", "the Resources tab")
    assert ui.el('.tabs a[aria-current="page"]').get_attribute("data-tab") == "resources"
    # Every control has a label (axe checks it too) and a visible focus ring.
    unlabelled = ui.d.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')].filter((e) =>"
        " e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))"
        ".map((e) => e.outerHTML)"
    )
    assert not unlabelled, unlabelled
