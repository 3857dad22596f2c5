"""The playground page (GET /) in a real headless Chromium, driven with Selenium, against a live server.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the test is
skipped and says why. Screenshots are saved to runs/test-artifacts/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lmlab.serve import ServeLimits, create_app
from serve_fixtures import NAMES, LiveServer, serve_runs  # noqa: F401  (session fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "runs" / "test-artifacts"


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    found = _chromium()
    if found is None:
        pytest.skip("headless Chromium not installed: apt-get install -y chromium chromium-driver "
                    "(.ci/run installs them)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-extensions", "--disable-sync", "--no-first-run",
                "--disable-default-apps", "--mute-audio", "--window-size=1100,1300"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Paced:
    """The real generator, one token per ``delay`` seconds, so the browser can be seen receiving pieces."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, prompt, **kwargs):
        for event in self.inner.stream(prompt, **kwargs):
            time.sleep(self.delay)
            yield event


def _wait(predicate, timeout: float = 20.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting for the page")


def _pick(driver, model_name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "model")).select_by_value(model_name)


def test_playground_streams_generation_and_classifies(browser, serve_runs):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver = browser
    app = create_app(list(serve_runs.values()), limits=ServeLimits(max_tokens=200))
    lm = app.state.models[NAMES["lm"]]
    lm.pipeline = Paced(lm.pipeline, 0.03)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with LiveServer(app) as server:
        driver.get(server.url + "/")
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#model option")) == len(serve_runs))
        assert "model(s) served" in driver.find_element(By.ID, "server-status").text

        # --- generation: type a prompt, watch the text grow piece by piece -------------------------------
        _pick(driver, NAMES["lm"])
        assert driver.find_element(By.ID, "panel-generator").is_displayed()
        assert not driver.find_element(By.ID, "panel-classifier").is_displayed()
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("ROMEO:")
        for field, value in (("max-tokens", "40"), ("seed", "4")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.find_element(By.ID, "generate").click()
        seen = set()

        def finished() -> bool:
            seen.add(len(driver.find_element(By.ID, "completion-text").text))
            return driver.find_element(By.ID, "generation-status").text.startswith("done")

        _wait(finished, timeout=40)
        text = driver.find_element(By.ID, "completion-text").text
        assert text.strip(), "no generated text"
        partial = {n for n in seen if 0 < n < len(text)}
        assert len(partial) >= 3, f"the text did not arrive in pieces (lengths seen: {sorted(seen)})"
        assert driver.find_element(By.ID, "completion-prompt").text == "ROMEO:"
        assert "finish_reason" in driver.find_element(By.ID, "generation-status").text
        driver.save_screenshot(str(ARTIFACTS / "playground-generate.png"))

        # --- stop button: the browser aborts the fetch, the server stops the generation -------------------
        box = driver.find_element(By.ID, "max-tokens")
        box.clear()
        box.send_keys("200")
        driver.find_element(By.ID, "generate").click()
        _wait(lambda: len(driver.find_element(By.ID, "completion-text").text) >= 3)
        driver.find_element(By.ID, "stop-generation").click()
        _wait(lambda: driver.find_element(By.ID, "generation-status").text.startswith("stopped"))
        _wait(lambda: app.state.runtime.snapshot()["cancelled"] >= 1 and app.state.runtime.snapshot()["active"] == 0,
              timeout=10)

        # --- a bad request shows the server's message ------------------------------------------------------
        prompt.clear()
        driver.find_element(By.ID, "generate").click()
        error = _wait(lambda: driver.find_element(By.ID, "error").text)
        assert "prompt" in error

        # --- classification: probabilities as bars ---------------------------------------------------------
        _pick(driver, NAMES["classifier"])
        assert driver.find_element(By.ID, "panel-classifier").is_displayed()
        assert not driver.find_element(By.ID, "error").is_displayed()
        box = driver.find_element(By.ID, "classify-text")
        box.send_keys("a gripping , beautifully acted film")
        driver.find_element(By.ID, "classify").click()
        rows = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#classify-result .bar-row"))
        labels = app.state.models[NAMES["classifier"]].pipeline.labels
        assert len(rows) == len(labels)
        widths = [float(r.find_element(By.CLASS_NAME, "bar").value_of_css_property("width").rstrip("px"))
                  for r in rows]
        track = float(rows[0].find_element(By.CLASS_NAME, "bar-track").value_of_css_property("width").rstrip("px"))
        assert sum(widths) == pytest.approx(track, rel=0.03)  # the bars are probabilities summing to one
        predicted = driver.find_element(By.CSS_SELECTOR, "#classify-result .predicted-label").text
        assert predicted in labels
        driver.save_screenshot(str(ARTIFACTS / "playground-classify.png"))

        # --- translation and nearest neighbours ------------------------------------------------------------
        if "translator" in serve_runs:
            _pick(driver, NAMES["translator"])
            driver.find_element(By.ID, "translate-text").send_keys("i am cold .")
            driver.find_element(By.ID, "translate").click()
            _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#translate-result .translation"))
            assert not driver.find_element(By.ID, "error").is_displayed()
            driver.save_screenshot(str(ARTIFACTS / "playground-translate.png"))
        if "vectors" in serve_runs:
            _pick(driver, NAMES["vectors"])
            driver.find_element(By.ID, "similar-words").send_keys("king")
            driver.find_element(By.ID, "similar").click()
            rows = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#vectors-result .bar-row"))
            assert len(rows) == 10
            driver.find_element(By.ID, "similar-words").clear()
            driver.find_element(By.ID, "similar-words").send_keys("kingg")
            driver.find_element(By.ID, "similar").click()
            assert "kingg" in _wait(lambda: driver.find_element(By.ID, "error").text)
            driver.save_screenshot(str(ARTIFACTS / "playground-vectors.png"))
    assert (ARTIFACTS / "playground-generate.png").stat().st_size > 10_000
