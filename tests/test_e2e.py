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


TIMING_DONE_JS = """
const bar = document.querySelector('[data-testid="stSidebar"]');
const text = bar ? bar.innerText : '';
return text.includes('timing: ') && !text.includes('of up to');
"""


def wait_timing_refined(driver, timeout: float = 180) -> None:
    """Until the sidebar's timing line says the refinement is complete: from then on the stored result is final
    and no timing pass reruns the page under a check (each pass that lands redraws the page by design)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.execute_script(TIMING_DONE_JS):
            wait_idle(driver)
            return
        time.sleep(0.5)
    raise AssertionError(f"the timing was not refined after {timeout:.0f} s")


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


# Layouts a class meets: a teacher's projector in presenter mode, a student's phone, a laptop.
LAYOUTS = {"presenter": (1280, 720, "?present=true"), "phone": (390, 844, ""), "laptop": (1440, 900, "")}

LAYOUT_JS = """
const vw = window.innerWidth, problems = [];
// Nothing reaches past the screen's edges unless a scrolling box (a table) clips it.
const clipped = e => {
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') {
      const r = a.getBoundingClientRect();
      return r.left >= -1 && r.right <= vw + 1;
    }
  }
  return false;
};
if (document.documentElement.scrollWidth > vw + 1) problems.push('page scrolls sideways: ' +
    document.documentElement.scrollWidth + ' px wide');
for (const e of document.querySelectorAll('[data-testid="stMain"] *')) {
  const r = e.getBoundingClientRect();
  if (r.width && r.height && (r.right > vw + 1 || r.left < -1) && !clipped(e))
    problems.push('wider than the screen: ' + e.tagName + ' ' + (e.getAttribute('data-testid') || '') + ' ' +
                  Math.round(r.left) + '..' + Math.round(r.right));
}
// Every chart has a title, inside the chart and the screen, and not under plotly's toolbar.
for (const p of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
  const t = p.querySelector('.gtitle'), c = p.getBoundingClientRect();
  if (!t || !t.textContent.trim()) { problems.push('a chart without a title'); continue; }
  const r = t.getBoundingClientRect(), name = t.textContent.slice(0, 60);
  if (r.left < c.left - 1 || r.right > c.right + 1 || r.top < c.top - 1 || r.right > vw + 1)
    problems.push('title cut off: ' + name);
  const bar = p.querySelector('.modebar-container'), m = p.querySelector('.modebar');
  if (bar && m && getComputedStyle(bar).display !== 'none') {
    const b = m.getBoundingClientRect();
    if (b.width && !(r.right < b.left || r.left > b.right || r.bottom < b.top || r.top > b.bottom))
      problems.push('title under the toolbar: ' + name);
  }
}
return problems.slice(0, 8);
"""

PANES_JS = """
const p = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
p.scrollIntoView({block: 'end'});
const at = s => p.querySelector('.draglayer .' + s + ' .nsewdrag').getBoundingClientRect();
const a = at('xy'), b = at('x2y2');
return {panes: [[a.left, a.top, a.right, a.bottom], [b.left, b.top, b.right, b.bottom]],
        width: window.innerWidth, height: window.innerHeight};
"""

RUN_BUTTON_JS = """
const b = [...document.querySelectorAll('[data-testid="stSidebar"] button')]
  .find(b => b.innerText.trim().endsWith('Run'));
const r = b.getBoundingClientRect();
return [r.top, r.bottom, window.innerHeight];
"""


def set_screen(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def page_links(driver) -> dict[str, str]:
    """Page name -> its address, read off the sidebar's links."""
    links = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=\"stSidebarNavLink\"]')]"
        ".map(a => [a.innerText.trim().split('\\n').pop(), a.href])")
    return dict(links)


def wait_rendered(driver, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and rendered_charts(driver) < chart_boxes(driver):
        time.sleep(0.3)


def sidebar_open(driver) -> bool:
    return driver.execute_script(
        "const s = document.querySelector('[data-testid=\"stSidebar\"]');"
        "return !!s && s.getBoundingClientRect().right > 10")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_page_fits_the_screen(server, browser, layout):
    """Every page, opened by its own link (a shared result: no second decode): no error, nothing wider than
    the screen, every chart drawn with its title in view; presenter mode shows both Attention panes at once."""
    width, height, query = LAYOUTS[layout]
    SHOTS.mkdir(parents=True, exist_ok=True)
    set_screen(browser, width, height)
    try:
        browser.get(server + "/" + query)  # a first visit decodes the default prompt with the bundled model
        wait_for(browser, '[data-testid="stMetric"]', 180)
        wait_idle(browser)
        if layout != "phone":  # the phone's sidebar is folded; its line is the same
            wait_timing_refined(browser)
        links = page_links(browser)
        assert len(links) >= 7, links
        if layout != "phone":  # Run reachable without scrolling (on a phone it is behind », see below)
            top, bottom, screen = browser.execute_script(RUN_BUTTON_JS)
            assert 0 <= top and bottom <= screen, f"{layout}: Run is below the fold ({top:.0f}..{bottom:.0f} px)"
        for i, (name, url) in enumerate(links.items()):
            browser.get(url + query)
            wait_for(browser, '[data-testid="stSidebarNavLink"]', 60)
            wait_idle(browser)
            wait_rendered(browser)
            slug = name.lower().replace(" ", "-")
            browser.save_screenshot(str(SHOTS / f"{layout}-{i:02d}-{slug}.png"))
            assert_no_exception(browser, name)
            errors = css(browser, '[data-testid="stAlertContentError"]')
            assert not errors, f"{layout} {name}: {errors[0].text[:300]}"
            assert chart_boxes(browser) >= 1 or name in ("Overview",), f"{name}: no figure on the page"
            assert rendered_charts(browser) == chart_boxes(browser), f"{layout} {name}: a figure did not render"
            problems = browser.execute_script(LAYOUT_JS)
            assert not problems, f"{layout} {name}: {problems}"
            if name == "Attention" and layout == "presenter":
                seen = browser.execute_script(PANES_JS)
                time.sleep(0.3)
                browser.save_screenshot(str(SHOTS / f"{layout}-{i:02d}-{slug}-panes.png"))
                (l1, t1, r1, b1), (l2, t2, r2, b2) = seen["panes"]
                assert r1 <= l2 and abs(t1 - t2) < 2, f"presenter Attention panes not side by side: {seen}"
                assert min(l1, t1, t2) >= 0 and r2 <= seen["width"] and max(b1, b2) <= seen["height"], seen
        if layout == "phone":  # settings are behind »; Run folds the sidebar away to show the progress
            assert browser.execute_script("return document.querySelector('.st-key-small_screen_hint')"
                                          ".getBoundingClientRect().height > 0"), "no hint about »"
            css(browser, '[data-testid="stExpandSidebarButton"]')[0].click()
            time.sleep(1)
            assert sidebar_open(browser)
            [b for b in css(browser, '[data-testid="stSidebar"] button') if b.text.strip().endswith("Run")][0].click()
            time.sleep(3)
            assert not sidebar_open(browser), "the sidebar still covers the page after Run"
            wait_idle(browser)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_bad_input_shows_a_message_and_keeps_results(server, browser):
    from selenium.webdriver.common.keys import Keys

    browser.get(server)
    wait_for(browser, '[data-testid="stMetric"]', 180)
    wait_idle(browser)
    if not sidebar_open(browser):  # the browser remembers a sidebar folded on a phone-sized screen
        css(browser, '[data-testid="stExpandSidebarButton"]')[0].click()
        time.sleep(1)
    wait_timing_refined(browser)
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


def test_a_deep_link_keeps_the_address_bar_in_step_with_every_change(server, browser):
    """A session that opens on /attention, its first run decoding, writes every Step change to the address
    bar, not only the first (the decode's status used to move the page's widgets, and the browser dropped
    their binding to the URL)."""
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server}/attention?new=7&layer=1&head=1&step=4")  # new=7: a fresh decode, not a shared run
    slider = '[data-testid="stSlider"] input[type="range"]'
    wait_for(browser, slider, 180)
    wait_idle(browser)
    for step in (5, 6):
        css(browser, slider)[0].send_keys(Keys.RIGHT)
        wait_idle(browser)
        deadline = time.time() + 10
        while time.time() < deadline and f"step={step}" not in browser.current_url:
            time.sleep(0.3)
        assert f"step={step}" in browser.current_url and "layer=1" in browser.current_url, browser.current_url
    assert_no_exception(browser, "deep link")


ALERTS_JS = "return [...document.querySelectorAll('[data-testid=\"stAlert\"]')].map(e => e.innerText)"


def test_stop_during_a_decode_shows_the_previous_run(server, browser):
    """Stop while waiting for a long decode: the page says so and shows the last finished run (not a spinner)."""
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "/side_by_side")
    wait_for(browser, '[data-testid="stPlotlyChart"] .main-svg', 180)
    wait_idle(browser)
    if not sidebar_open(browser):
        css(browser, '[data-testid="stExpandSidebarButton"]')[0].click()
        time.sleep(1)
    box = css(browser, '[data-testid="stSidebar"] input[type="number"]')[0]  # Max new tokens
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("230", Keys.ENTER)
    wait_idle(browser)
    [b for b in css(browser, '[data-testid="stSidebar"] button') if b.text.strip().endswith("Run")][0].click()
    time.sleep(1.5)
    stop = [b for b in css(browser, '[data-testid="stStatusWidget"] button, header button') if b.text.strip() == "Stop"]
    if not stop:
        pytest.skip("the 230-token decode finished before Stop could be pressed")
    stop[0].click()
    deadline = time.time() + 30
    while time.time() < deadline and not any("Stopped: showing your previous run." in t
                                             for t in browser.execute_script(ALERTS_JS)):
        time.sleep(0.3)
    wait_idle(browser)
    browser.save_screenshot(str(SHOTS / "stopped.png"))
    alerts = browser.execute_script(ALERTS_JS)
    assert any("Stopped: showing your previous run." in t for t in alerts), alerts
    assert rendered_charts(browser) >= 1, "the previous run is not on the page"
    assert not css(browser, '[data-testid="stStatusWidget"] img'), "still running after Stop"
