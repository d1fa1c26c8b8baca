"""End to end in a real browser: `streamlit run app.py`, headless Debian Chromium, every page.

Skips (with the reason) where Chromium or its driver is missing; `.ci/run` installs both.
Screenshots land in artifacts/e2e/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "e2e"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver); .ci/run installs them")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GPTVIZ_HOSTED": "0"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / "e2e-streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not come up within 60 s; see artifacts/e2e-streamlit.log")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


RUNNING_JS = """
const w = document.querySelector('[data-testid="stStatusWidget"]');
return !!(w && (w.innerText.includes('Running') || w.querySelector('img, svg')));
"""


def wait_idle(driver, timeout: float = 120) -> None:
    """Until the script run ends: Streamlit's 'running' widget gone three polls in a row (read in JS,
    so an element re-rendered mid-check cannot go stale)."""
    deadline, quiet = time.time() + timeout, 0
    time.sleep(0.5)
    while time.time() < deadline:
        quiet = 0 if driver.execute_script(RUNNING_JS) else quiet + 1
        if quiet >= 3:
            return
        time.sleep(0.4)
    raise AssertionError(f"the app was still running after {timeout:.0f} s")


def wait_for(driver, selector: str, timeout: float = 120, count: int = 1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = css(driver, selector)
        if len(found) >= count:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {selector!r} after {timeout:.0f} s")


def rendered_charts(driver) -> int:
    """Plotly charts that really drew: an SVG with at least one trace in it."""
    return driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot')]"
        ".filter(p => p._fullData && p._fullData.length > 0 && p.querySelector('.main-svg')).length")


def nav_names(driver) -> list[str]:
    """The sidebar's page links, icon ligature text dropped; retried while Streamlit re-renders them."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return [link.text.strip().splitlines()[-1] for link in css(driver, '[data-testid="stSidebarNavLink"]')]
        except StaleElementReferenceException:
            time.sleep(0.3)
    raise AssertionError("the page links kept re-rendering")


def open_page(driver, name: str) -> None:
    """Click the sidebar link named ``name``; a link replaced mid-click is found again."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            for link in css(driver, '[data-testid="stSidebarNavLink"]'):
                if link.text.strip().splitlines()[-1] == name:
                    link.click()
                    return
        except StaleElementReferenceException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"no clickable page link {name!r}")


def chart_boxes(driver) -> int:
    return len(css(driver, '[data-testid="stPlotlyChart"]'))


def assert_no_exception(driver, page: str) -> None:
    boxes = css(driver, '[data-testid="stException"]')
    assert not boxes, f"{page}: Streamlit exception box: {boxes[0].text[:500]}"


def test_every_page_renders_its_figures(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(server)  # a first visit decodes the default prompt with the bundled model
    wait_for(browser, '[data-testid="stSidebarNavLink"]', 60)
    wait_for(browser, '[data-testid="stMetric"]', 180)
    wait_idle(browser)
    names = nav_names(browser)
    assert len(names) >= 7, names
    for i, name in enumerate(names):
        open_page(browser, name)
        wait_idle(browser)
        deadline = time.time() + 60
        while time.time() < deadline and (not chart_boxes(browser) or rendered_charts(browser) < chart_boxes(browser)):
            time.sleep(0.3)
            if name == "Overview":  # the headline page is numbers and text, no figure
                break
        slug = name.splitlines()[-1].lower().replace(" ", "-")
        browser.save_screenshot(str(SHOTS / f"{i:02d}-{slug}.png"))
        assert_no_exception(browser, name)
        if name == "Overview":
            assert len(css(browser, '[data-testid="stMetric"]')) >= 4, "Overview: headline numbers missing"
            continue
        assert chart_boxes(browser) >= 1, f"{name}: no figure on the page"
        assert rendered_charts(browser) == chart_boxes(browser), f"{name}: a figure did not render"


def test_bad_input_shows_a_message_and_keeps_results(server, browser):
    from selenium.webdriver.common.keys import Keys

    browser.get(server)
    wait_for(browser, '[data-testid="stMetric"]', 180)
    wait_idle(browser)
    open_page(browser, nav_names(browser)[1])  # a page with a figure
    wait_idle(browser)
    wait_for(browser, '[data-testid="stPlotlyChart"] .main-svg', 60)
    box = css(browser, '[data-testid="stSidebar"] textarea')[0]
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # commit the empty prompt
    run = [b for b in css(browser, '[data-testid="stSidebar"] button') if b.text.strip().endswith("Run")][0]
    run.click()
    wait_idle(browser)
    wait_for(browser, '[data-testid="stAlertContentError"]', 30)
    errors = browser.execute_script(
        "return [...document.querySelectorAll('[data-testid=\"stAlertContentError\"]')].map(e => e.innerText)")
    assert "empty" in " ".join(errors).lower()
    assert_no_exception(browser, "bad input")
    assert rendered_charts(browser) >= 1, "the last good results disappeared"
    browser.save_screenshot(str(SHOTS / "bad-input-empty-prompt.png"))
