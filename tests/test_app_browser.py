"""``streamlit run app.py`` in headless Chromium at 1400x1000, driven as a user drives it (slow tests).

One server and one browser serve every test of this module: a storage with the fixture study
(`test_explore.make_study`) and one filled by the app's own demo search. Layout is checked by
the elements' bounding boxes (inside their plot or column, not overlapping), never by pixels.
Needs the Debian packages chromium and chromium-driver (``.ci/run`` installs them) and selenium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_explore import make_study

APP = str(Path(__file__).resolve().parents[1] / "app.py")
WIDTH, HEIGHT = 1400, 1000

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """The browser on the app: waits for Streamlit to finish a run, clicks, types, and measures boxes."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.common.by import By

        self.d, self.url, self.By = driver, url, By

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until the script run is over: no status widget, no stale element, a chart or a message
        drawn, for 1.5 s in a row (a run may start a moment after the click)."""
        deadline, quiet_since = time.monotonic() + timeout, None
        time.sleep(0.5)
        while time.monotonic() < deadline:
            busy = self.d.execute_script(
                "return !!document.querySelector('[data-testid=\"stStatusWidget\"]')"
                " || !!document.querySelector('[data-stale=\"true\"]')"
                " || !document.querySelector('.js-plotly-plot .main-svg, [data-testid=\"stAlert\"]');")
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.5:
                return
            time.sleep(0.2)
        raise AssertionError("the page did not finish its run in time")

    def click(self, element) -> None:
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)

    def text(self) -> str:
        return self.d.find_element(self.By.TAG_NAME, "body").text

    def view(self, name: str) -> None:
        for label in self.d.find_elements(self.By.CSS_SELECTOR, '[data-testid="stRadio"] label'):
            if label.text.strip() == name:
                self.click(label)
                self.settle()
                return
        raise AssertionError(f"no radio option {name!r}")

    def widget(self, kind: str, label: str):
        for w in self.d.find_elements(self.By.CSS_SELECTOR, f'[data-testid="{kind}"]'):
            if label in [line.strip() for line in w.text.split("\n")]:
                return w
        raise AssertionError(f"no {kind} labelled {label!r}")

    def chosen(self, label: str) -> str:
        """The text a selectbox shows."""
        return self.widget("stSelectbox", label).find_element(self.By.TAG_NAME, "input").get_attribute("value")

    def choose(self, label: str, typed: str) -> None:
        """Type ``typed`` into the selectbox ``label`` to filter its options and click the first one left."""
        from selenium.webdriver.common.keys import Keys

        field = self.widget("stSelectbox", label).find_element(self.By.TAG_NAME, "input")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(typed)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            options = [o for o in self.d.find_elements(self.By.CSS_SELECTOR, '[role="option"]') if typed in o.text]
            if options:
                self.click(options[0])
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no option of {label!r} shows {typed!r}")
        time.sleep(0.5)
        self.settle()

    def type_into(self, label: str, value: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.widget("stTextInput", label).find_element(self.By.TAG_NAME, "input")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value, Keys.ENTER)
        time.sleep(0.5)
        self.settle()

    def boxes(self, css: str, within=None) -> list[dict]:
        """Bounding boxes (left, top, right, bottom, text) of the elements matching ``css``."""
        root = within if within is not None else self.d
        return [self.box(e) for e in root.find_elements(self.By.CSS_SELECTOR, css)]

    def box(self, element) -> dict:
        return self.d.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, text: arguments[0].textContent};",
            element)

    def plot_with(self, text: str):
        """The plotly chart whose text contains ``text``."""
        for p in self.d.find_elements(self.By.CSS_SELECTOR, ".js-plotly-plot"):
            if text in p.get_attribute("textContent"):
                return p
        raise AssertionError(f"no chart shows {text!r}")


def _inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (inner["left"] >= outer["left"] - slack and inner["right"] <= outer["right"] + slack
            and inner["top"] >= outer["top"] - slack and inner["bottom"] <= outer["bottom"] + slack)


def _overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        pytest.skip("no browser installed: needs chromium and chromedriver (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    from nas.explore.demo import run_demo

    tmp = tmp_path_factory.mktemp("browser")
    env = {**os.environ, "HARDNAS_RUNS": str(tmp / "runs"), "NAS_STORAGE": ""}
    url = f"sqlite:///{tmp / 'nas.db'}"
    make_study(url)
    demo_url = f"sqlite:///{tmp / 'demo' / 'nas.db'}"
    (tmp / "demo").mkdir()
    run_demo(demo_url)
    port = _free_port()
    log = open(tmp / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
         "--", "--storage", url],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    driver = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp / "streamlit.log").read_text()
                time.sleep(0.3)
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp / 'chrome-profile'}", f"--window-size={WIDTH},{HEIGHT}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{port}/")
        p = Page(driver, url)
        p.demo_url, p.tmp = demo_url, tmp
        p.settle()
        yield p
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_in_a_real_browser(page):
    body = page.text()
    assert "hardnas explorer" in body
    assert "fixture #2" in page.chosen("architecture")  # the fastest front point, selected
    assert page.d.find_elements(page.By.CSS_SELECTOR, ".js-plotly-plot")
    legend = " ".join(e.text for e in page.d.find_elements(page.By.CSS_SELECTOR, ".js-plotly-plot .legendtext"))
    assert "Pareto front" in legend and "baselines" in legend
    assert not page.d.find_elements(page.By.CSS_SELECTOR, '[data-testid="stException"]')
    shot = page.tmp / "pareto.png"
    page.d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_a_rejected_baseline_is_drawn(page):
    plot = page.plot_with("Pareto front")
    legend = [b["text"] for b in page.boxes(".legendtext", plot)]
    assert "baselines without accuracy" in legend
    frame = page.box(plot.find_element(page.By.CSS_SELECTOR, ".main-svg"))
    band = [b for b in page.boxes("g.annotation", plot) if b["text"] == "no accuracy"]
    assert len(band) == 1 and _inside(band[0], frame)
    assert any("hardnet68" in b["text"] for b in page.boxes("g.annotation", plot))  # its reference line too


def test_labels_are_not_clipped_at_1400_px(page):
    plot = page.plot_with("Pareto front")
    frame = page.box(plot.find_element(page.By.CSS_SELECTOR, ".main-svg"))
    notes = page.boxes("g.annotation", plot)
    refs = [b for b in notes if "(predicted)" in b["text"]]
    assert len(refs) == 3, [b["text"] for b in notes]  # every reference line has its label
    assert all(_inside(b, frame) for b in notes), notes
    assert not any(_overlap(a, b) for i, a in enumerate(refs) for b in refs[i + 1:]), refs
    metrics = page.d.find_elements(page.By.CSS_SELECTOR, '[data-testid="stMetricValue"]')
    assert metrics and all(page.d.execute_script(
        "const e = arguments[0].querySelector('div') || arguments[0]; return e.scrollWidth <= e.clientWidth + 1;", m)
        for m in metrics)  # no value cut to "0.…"
    main = page.d.find_element(page.By.CSS_SELECTOR, '[data-testid="stMain"]')
    column = page.box(page.d.find_element(page.By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"]'))

    def tables_fit() -> None:
        cells = page.boxes('[data-testid="stTable"] th, [data-testid="stTable"] td')
        assert cells and all(c["right"] <= column["right"] + 1 for c in cells), max(c["right"] for c in cells)
        for t in page.d.find_elements(page.By.CSS_SELECTOR, '[data-testid="stTable"]'):
            assert page.d.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth + 1;", t)

    tables_fit()  # the per-stage table shows MACs, CIO and MoC
    expander = page.widget("stExpander", "config")
    page.click(expander.find_element(page.By.TAG_NAME, "summary"))
    time.sleep(1.0)
    assert page.box(expander)["bottom"] - page.box(expander)["top"] < 450  # not thousands of pixels of JSON
    page.view("Compare")
    tables_fit()
    assert page.d.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth + 1;", main)
    page.view("Trade-offs")
    parcoords = page.plot_with("link_rule")
    outer = page.box(parcoords)
    titles = page.boxes("text.axis-title", parcoords)
    assert len(titles) >= 9 and all(_inside(t, outer) for t in titles), [t for t in titles if not _inside(t, outer)]
    kendall = [e for e in page.d.find_elements(page.By.CSS_SELECTOR, '[data-testid="stMarkdownContainer"]')
               if "Kendall" in e.text]
    assert len(kendall) == 2
    charts = [page.box(p) for p in page.d.find_elements(page.By.CSS_SELECTOR, ".js-plotly-plot .modebar")]
    assert not any(_overlap(page.box(k), c) for k in kendall for c in charts)  # not under a plot's toolbar
    page.view("Pareto front")


def test_the_selection_survives_a_view_switch(page):
    page.choose("architecture", "fixture #5")
    assert "fixture #5" in page.chosen("architecture")
    page.view("Trade-offs")
    page.view("Compare")
    assert "fixture #5" in page.chosen("A")
    page.view("Pareto front")
    assert "fixture #5" in page.chosen("architecture")


def test_the_demo_has_no_false_proxy_warning(page):
    page.type_into("storage URL", page.demo_url)
    assert "demo" in page.widget("stMultiSelect", "studies (overlaid)").text
    alerts = " ".join(e.text for e in page.d.find_elements(page.By.CSS_SELECTOR, '[data-testid="stAlert"]'))
    assert "different accuracy proxies" not in alerts
    plot = page.plot_with("Pareto front")
    assert [b["text"] for b in page.boxes(".ytitle", plot)] == ["score (zero-cost:naswot)"]
    page.type_into("storage URL", page.url)
