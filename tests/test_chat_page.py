"""The chat page (`GET /`) in a real headless Chromium, against a real uvicorn server on loopback.

Needs the Debian packages `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`);
without them the module is skipped. Nothing here downloads a browser or a driver: Selenium is given both
paths, so Selenium Manager never runs. With `SIA_MONITOR_SCREENSHOT=1` the default-model test saves the
finished page to `docs/chat-page.png` (the README's picture); otherwise screenshots go to pytest's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from sia_monitor.backends.in_process import Monitor
from sia_monitor.serve.app import create_app
from sia_monitor.serve.background import running_server
from sia_monitor.tasks.answers import NUMERIC

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: CI without a browser never needs selenium)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is 7 + 8? Think step by step."
KEY = "k"
SCREENSHOT = os.environ.get("SIA_MONITOR_SCREENSHOT") == "1"
ASKED, MAX_TOKENS = QUESTION, 48
# the reply's text without the step badges the page inserts into it
REPLY_TEXT_JS = """
const text = arguments[0].querySelector('.reply-text').cloneNode(true);
text.querySelectorAll('.step-mark').forEach((mark) => mark.remove());
return text.textContent;
"""


@pytest.fixture(scope="module")
def server(smol: Monitor) -> Iterator[str]:
    app = create_app(Monitor(smol.loaded, segmenter="sentence"), api_key=KEY)
    with running_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="sia-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,860"):
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never fetch anything
        browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield browser
        finally:
            browser.quit()
            shutil.rmtree(profile, ignore_errors=True)


def open_page(driver: webdriver.Chrome, base: str) -> None:
    """A fresh page: no key left in sessionStorage from an earlier test."""
    driver.get(base + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "api-key").is_displayed())


def ask(driver: webdriver.Chrome, question: str, key: str | None, max_tokens: int, policy: str = "observe",
        threshold: str | None = None) -> None:
    if key is not None:
        driver.find_element(By.ID, "api-key").send_keys(key)
    tokens = driver.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    driver.find_element(By.CSS_SELECTOR, f"#policy option[value='{policy}']").click()
    if threshold is not None:
        box = driver.find_element(By.ID, "threshold")
        box.clear()
        box.send_keys(threshold)
    box = driver.find_element(By.ID, "question")
    box.send_keys(question)
    box.send_keys(Keys.ENTER)  # Enter sends


def wait_status(driver: webdriver.Chrome, states: tuple[str, ...], timeout: float = 120) -> str:
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda d: status.get_attribute("data-state") in states)
    return status.text


def save_screenshot(driver: webdriver.Chrome, tmp_path: Path, for_docs: bool = False) -> Path:
    target = REPO / "docs" / "chat-page.png" if for_docs and SCREENSHOT else tmp_path / "chat-page.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    partial.write_bytes(driver.get_screenshot_as_png())
    os.replace(partial, target)
    return target


def test_the_page_streams_a_monitored_reply(server: str, driver: webdriver.Chrome, smol: Monitor,
                                             tmp_path: Path) -> None:
    from calibrators import calibrator_for

    open_page(driver, server)
    ask(driver, ASKED, KEY, MAX_TOKENS)
    assert wait_status(driver, ("done", "error", "stopped")) == "done"

    bubble = driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1]
    text = driver.execute_script(REPLY_TEXT_JS, bubble)
    steps = int(bubble.get_attribute("data-steps"))
    marks = bubble.find_elements(By.CLASS_NAME, "step-mark")
    points = driver.find_elements(By.CSS_SELECTOR, "#curve .entropy-point")
    assert steps >= 1 and len(marks) == len(points) == steps
    assert driver.find_element(By.ID, "summary").get_attribute("data-steps") == str(steps)
    assert driver.find_elements(By.CSS_SELECTOR, "#messages .msg.user")[-1].text == ASKED

    # the same request, not streamed (greedy): the page showed exactly its text and its steps
    plain = httpx.post(server + "/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {KEY}"},
                       json={"model": smol.model_id, "messages": [{"role": "user", "content": ASKED}],
                             "max_tokens": MAX_TOKENS}).json()
    assert text and text == plain["choices"][0]["message"]["content"]
    assert steps == plain["sia"][0]["steps"]

    readout = driver.find_element(By.ID, "p-correct").text
    if calibrator_for(smol.model_id, NUMERIC, "auto") is None:  # no shipped calibrator: no P(correct)
        assert readout == "—"
        assert not driver.find_elements(By.CSS_SELECTOR, "#curve .p-point")
    else:
        assert 0.0 <= float(readout) <= 1.0
        assert len(driver.find_elements(By.CSS_SELECTOR, "#curve .p-point")) == steps
    assert driver.execute_script("return sessionStorage.getItem('sia-monitor-api-key')") == KEY
    assert save_screenshot(driver, tmp_path).stat().st_size > 10_000


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_missing_or_wrong_key_shows_the_401_message(server: str, driver: webdriver.Chrome,
                                                      key: str | None) -> None:
    open_page(driver, server)
    ask(driver, QUESTION, key, 8)
    message = wait_status(driver, ("done", "error", "stopped"), timeout=30)
    assert message.startswith("401") and "API key" in message
    assert "error" in driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1].get_attribute("class")


def test_the_policy_control_reaches_the_server_and_its_error_is_shown(server: str,
                                                                      driver: webdriver.Chrome) -> None:
    open_page(driver, server)
    ask(driver, QUESTION, KEY, 8, policy="accept", threshold="1.5")  # out of range: refused before generating
    message = wait_status(driver, ("done", "error", "stopped"), timeout=30)
    assert message.startswith("400: ") and "accept_above" in message
    assert driver.find_element(By.ID, "send").is_enabled()


def test_stop_aborts_the_stream_and_the_server_cancels(server: str, driver: webdriver.Chrome) -> None:
    open_page(driver, server)
    ask(driver, QUESTION, KEY, 400)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .step-mark"))
    driver.find_element(By.ID, "stop").click()
    assert wait_status(driver, ("done", "error", "stopped"), timeout=10) == "stopped"
    deadline = time.monotonic() + 20
    while (health := httpx.get(server + "/health").json())["running"]:
        assert time.monotonic() < deadline, "the generation kept running after the page stopped it"
        time.sleep(0.1)
    assert health["waiting"] == 0
    assert driver.find_element(By.ID, "send").is_enabled()


@pytest.mark.default_model
def test_the_default_model_shows_a_live_p_correct_curve(qwen: Monitor, driver: webdriver.Chrome,
                                                         tmp_path: Path) -> None:
    question = "Tom has 3 boxes with 12 apples in each box. He gives away 7 apples. How many apples are left?"
    with running_server(create_app(qwen)) as base:
        driver.get(base + "/")
        ask(driver, question, None, 160)
        assert wait_status(driver, ("done", "error", "stopped"), timeout=300) == "done"
        bubble = driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1]
        steps = int(bubble.get_attribute("data-steps"))
        assert steps >= 2
        assert len(driver.find_elements(By.CSS_SELECTOR, "#curve .p-point")) == steps  # the shipped calibrator
        assert 0.0 <= float(driver.find_element(By.ID, "p-correct").text) <= 1.0
        assert save_screenshot(driver, tmp_path, for_docs=True).stat().st_size > 10_000
