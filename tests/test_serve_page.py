"""The page of ``musicidx serve`` in a real headless browser (issue 12, item 4): a real server
process (``python -m musicidx serve``, its token from $MUSICIDX_TOKEN) and Debian's Chromium driven
by selenium: the page asks for the token, a MIDI file is chosen with the keyboard-reachable file
input, the verdict is read off the page, both audio players load, a bad file is said in one line,
and a narrow screen needs no sideways scrolling.  Screenshots are kept as artefacts: in the test's
temporary folder and, when $MUSICIDX_ARTEFACTS names a folder, copied there."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from midi_factory import TRACK_NAMES
from tiny import FEATURES

TOKEN = "page-test-token"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> tuple[str, str] | None:
    driver = shutil.which("chromedriver")
    binary = next((b for b in map(shutil.which, BROWSERS) if b), None)
    return (driver, binary) if driver and binary else None


pytestmark = [
    pytest.mark.fluidsynth,
    pytest.mark.skipif(
        _browser() is None, reason="no chromedriver and Chromium (Debian: apt-get install chromium-driver)"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.fixture
def server(built_index: Path, tmp_path: Path) -> Iterator[str]:
    """``python -m musicidx serve`` on a free loopback port, token from the environment; stopped
    with SIGINT (as Ctrl-C) at the end."""
    pytest.importorskip("fastapi", reason="the serve extra (musicidx[serve]) is not installed")
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "musicidx", "serve", "--index", str(built_index), "--port", str(port)]
            + ["--workers", "1"],
            cwd=tmp_path,
            env={**os.environ, "MUSICIDX_TOKEN": TOKEN},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"musicidx serve exited with {proc.returncode}: {log.read_text()}")
            try:
                if _status(url + "healthz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"musicidx serve did not answer within 90 s: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    said = log.read_text()
    assert said.startswith(f"serving {built_index} at {url} (") and "Traceback" not in said
    assert proc.returncode == 130 and said.splitlines()[-1] == "musicidx: interrupted", said  # as Ctrl-C


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = _browser()
    assert found is not None
    driver_path, binary = found
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(arg)
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))  # a given driver: no download
    try:
        yield driver
    finally:
        driver.quit()


def _keep(driver: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in ``tmp_path``, copied to $MUSICIDX_ARTEFACTS when set."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(max(width, 320), height + 120)
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    if os.environ.get("MUSICIDX_ARTEFACTS"):
        dest = Path(os.environ["MUSICIDX_ARTEFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / name)
    return shot


@pytest.mark.slow  # a server process and headless Chromium
def test_the_page_answers_a_chosen_file_in_a_real_browser(
    server: str, browser: Any, corpus_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert _status(server + "v1/info") == 401 and _status(server + "v1/info", TOKEN) == 200
    d = browser
    wait = WebDriverWait(d, 60)
    d.get(server)
    wait.until(lambda d: d.find_element(By.ID, "token-row").is_displayed())  # the page asks for the token
    assert d.find_element(By.ID, "result").get_attribute("aria-live") == "polite"

    # keyboard only: the first Tab reaches the file input (its label names it), the next ones the token and button
    order = []
    for _ in range(3):
        ActionChains(d).send_keys(Keys.TAB).perform()
        order.append(d.switch_to.active_element.get_attribute("id"))
    assert order == ["file", "token", "submit"]
    assert d.find_element(By.CSS_SELECTOR, "label[for=file]").text == "MIDI file (.mid, .midi)"
    d.find_element(By.ID, "token").send_keys(TOKEN)

    piece = tmp_path / "a piece by Beta.mid"  # a training track under another name: a certain verdict
    shutil.copy(corpus_dir / "Beta" / TRACK_NAMES[2], piece)
    d.find_element(By.ID, "file").send_keys(str(piece))  # choosing a file asks at once
    wait.until(lambda d: d.find_element(By.ID, "verdict").text)
    assert d.find_element(By.ID, "verdict").text == (
        f"A known composer: Beta. It plays the same notes as the training track Beta/{TRACK_NAMES[2]}."
    )
    assert d.find_element(By.ID, "composer").text == "Composer: Beta (confidence 1.00)"
    bars = d.find_elements(By.CSS_SELECTOR, "#votes li")
    assert [b.get_attribute("aria-label") for b in bars][0] == "Beta: 1.00 of the vote" and len(bars) == 3
    assert len(d.find_elements(By.CSS_SELECTOR, "#nearest li")) == 3
    assert d.find_element(By.ID, "status").text.startswith("Answered a piece by Beta.mid in ")

    # both players load a clip of the index's clip length
    durations = "return [...document.querySelectorAll('#query-clip audio, #match-clip audio')].map(a => a.duration)"
    wait.until(lambda d: len(d.execute_script(durations)) == 2 and all(x > 0 for x in d.execute_script(durations)))
    assert d.execute_script(durations) == pytest.approx([FEATURES.clip_seconds] * 2, abs=0.05)
    # side by side, both players sit at one height whatever their captions' lengths (issue 19)
    tops = durations.replace("a.duration", "a.getBoundingClientRect().top")
    top_query, top_match = d.execute_script(tops)
    assert top_query == pytest.approx(top_match, abs=1)
    assert d.find_element(By.CSS_SELECTOR, "#novelty .mark-label").text.startswith("threshold ")
    _keep(d, tmp_path, "serve-page.png")

    # a narrow screen: nothing wider than the window
    d.set_window_size(360, 800)
    wide = "return document.documentElement.scrollWidth - window.innerWidth"
    wait.until(lambda d: d.execute_script("return window.innerWidth") <= 360)
    assert d.execute_script(wide) <= 0
    _keep(d, tmp_path, "serve-page-narrow.png")

    # a file that is not MIDI: the reason in one line, where the answer was
    bad = tmp_path / "notes.mid"
    bad.write_text("not music")
    d.find_element(By.ID, "file").send_keys(str(bad))
    wait.until(lambda d: "Cannot answer" in d.find_element(By.ID, "status").text)
    assert d.find_element(By.ID, "status").text == ("Cannot answer for notes.mid: not a MIDI file (no 'MThd' header)")
    assert not d.find_element(By.ID, "answer").is_displayed()
