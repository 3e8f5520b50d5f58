"""The studio page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): click and key through a round, check the history file, move the truncation slider
and see the images change, and save a screenshot; on an hvae, the temperature slider."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.studio_support import start, trained_gan, trained_hvae, workdir_copy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    why_not = None
except ImportError:
    why_not = "selenium is not installed (pip install -e '.[dev]')"
if why_not is None and not (CHROMIUM and DRIVER):
    why_not = ("no chromium/chromedriver on PATH (apt-get install -y chromium chromium-driver; "
               ".ci/run does it where apt works)")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(why_not is not None, reason=why_not or "")]


def chromium(user_dir: str):
    """A headless Chromium on the system binary (Selenium never downloads a browser here)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={user_dir}"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(DRIVER))


def open_studio(driver, url: str):
    driver.get(url)
    WebDriverWait(driver, 120).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def sources(driver) -> list[str]:
    """The gallery's image sources, read in one script (the page may be replacing them)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#gallery img')].map((i) => i.src)")


@pytest.fixture
def browser():
    with tempfile.TemporaryDirectory(prefix="genart-chromium-") as user_dir:
        driver = chromium(user_dir)
        try:
            yield driver
        finally:
            driver.quit()


def test_click_through_a_round_and_move_the_truncation_slider(tmp_path_factory, browser):
    work = workdir_copy(trained_gan(tmp_path_factory), tmp_path_factory.mktemp("br") / "run")
    server = start(work, num=8)
    try:
        open_studio(browser, server.url)
        tiles = browser.find_elements(By.CSS_SELECTOR, "#gallery .tile")
        assert len(tiles) == 8 and "Round 1" in browser.find_element(By.ID, "round-title").text
        tiles[0].click()  # like
        tiles[1].click()
        tiles[2].click()
        tiles[2].click()  # like -> dislike
        tiles[3].send_keys("d")  # the keyboard
        tiles[4].click()
        tiles[4].send_keys("c")  # liked, then cleared
        assert "liked" in tiles[0].get_attribute("class")
        assert browser.find_element(By.ID, "counts").text.startswith("2 liked, 2 disliked")
        browser.find_element(By.ID, "next-round").click()
        WebDriverWait(browser, 60).until(
            lambda d: "Round 2" in d.find_element(By.ID, "round-title").text)
        rec = json.loads((work / "feedback" / "feedback.jsonl").read_text().splitlines()[-1])
        assert (rec["round"], rec["liked"], rec["disliked"]) == (1, [0, 1], [2, 3])
        assert (work / "feedback" / "round_002.npy").is_file()
        WebDriverWait(browser, 10).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history button")) == 1)

        before = sources(browser)
        slider = browser.find_element(By.ID, "psi")
        slider.send_keys(Keys.HOME)  # psi 1 -> 0: every sample becomes G(mean)
        WebDriverWait(browser, 60).until(lambda d: sources(d) != before)
        assert browser.find_element(By.ID, "psi-value").text == "0.00"
        after = sources(browser)
        assert len(set(after)) == 1 and len(set(before)) > 1
        shot = Path(os.environ.get("GENART_STUDIO_SCREENSHOT", tmp_path_factory.mktemp("shot")
                                   / "studio.png"))
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        assert np.frombuffer(shot.read_bytes()[:8], np.uint8).tolist()[:4] == [137, 80, 78, 71]
    finally:
        server.shutdown()
        server.server_close()


def test_an_hvae_has_a_temperature_slider_and_no_finetune(tmp_path_factory, browser):
    work = workdir_copy(trained_hvae(tmp_path_factory), tmp_path_factory.mktemp("bh") / "run")
    server = start(work, num=8)
    try:
        open_studio(browser, server.url)
        assert browser.find_element(By.ID, "temperature-box").is_displayed()
        assert not browser.find_element(By.ID, "ft-box").is_displayed()
        assert browser.find_element(By.ID, "temperature-value").text == "1.00"
        before = sources(browser)
        assert len(before) == 8
        browser.find_element(By.ID, "temperature").send_keys(Keys.HOME)  # 1.0 -> 0
        WebDriverWait(browser, 60).until(lambda d: sources(d) != before)
        assert browser.find_element(By.ID, "temperature-value").text == "0.00"
        browser.find_element(By.CSS_SELECTOR, "#gallery .tile").click()  # like sample 0
        browser.find_element(By.ID, "next-round").click()
        WebDriverWait(browser, 60).until(
            lambda d: "Round 2" in d.find_element(By.ID, "round-title").text)
        rec = json.loads((work / "feedback" / "feedback.jsonl").read_text())
        assert (rec["round"], rec["liked"]) == (1, [0])
    finally:
        server.shutdown()
        server.server_close()


def test_a_gan_has_no_temperature_slider(tmp_path_factory, browser):
    work = workdir_copy(trained_gan(tmp_path_factory), tmp_path_factory.mktemp("bg") / "run")
    server = start(work, num=8)
    try:
        open_studio(browser, server.url)
        assert not browser.find_element(By.ID, "temperature-box").is_displayed()
        assert browser.find_element(By.ID, "ft-box").is_displayed()
    finally:
        server.shutdown()
        server.server_close()
