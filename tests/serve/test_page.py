"""The page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``):
choose an image, type a text, submit, see the decision and the certified region."""

import os
import shutil

import pytest

from tests.serve.conftest import TARGETS, live_service, png

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("the page test needs Debian's chromium and chromium-driver "
                           "(apt-get install chromium chromium-driver)")
    pytest.skip("chromium / chromedriver not installed", allow_module_level=True)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,1400", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _moderate_in_page(driver, url, image_path, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "image").send_keys(str(image_path))
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "submit").click()
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.ID, "result").is_displayed()
               or d.find_element(By.ID, "error").is_displayed())
    assert not driver.find_element(By.ID, "error").is_displayed(), \
        driver.find_element(By.ID, "error").text
    wait.until(seen.visibility_of_element_located((By.ID, "decision")))
    return driver


def test_upload_submit_and_see_decision_and_region(browser, tmp_path):
    from selenium.webdriver.common.by import By

    fixture = tmp_path / "bright.png"
    fixture.write_bytes(png(0.95))
    with live_service() as (url, _):
        _moderate_in_page(browser, url, fixture, "we bake a cake together")
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert browser.find_element(By.ID, "decision").text == "unsafe"
        rows = browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr")
        assert len(rows) == len(TARGETS)
        first = [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]
        assert first[:3] == ["0", "0", "yes"]             # the input itself is certified
        assert first[3].startswith("certified at ")
        for row in rows:
            ended = row.find_elements(By.TAG_NAME, "td")[3].text
            assert ended.split(" at ")[0] in ("certified", "refuted", "gave up", "cap")
        region = browser.find_elements(By.CSS_SELECTOR, "#region tbody tr")
        assert region and region[0].find_elements(By.TAG_NAME, "td")[0].text == "0"
        assert float(region[0].find_elements(By.TAG_NAME, "td")[1].text) > 0
        bars = browser.find_elements(By.CSS_SELECTOR, "#region-chart svg rect")
        assert len(bars) == len(region)
        summary = browser.find_element(By.ID, "summary").text
        assert "model evaluations" in summary and summary.startswith("certified at ")

        # an input nothing can be certified for: the page says the service abstains
        from tests.serve.conftest import png_even

        even = tmp_path / "even.png"
        even.write_bytes(png_even())
        _moderate_in_page(browser, url, even, "unknown words")
        assert browser.find_element(By.ID, "decision").text == "abstain"
        assert "abstains" in browser.find_element(By.ID, "region-chart").text
        assert not browser.find_element(By.ID, "summary").text.startswith("certified")


def test_page_shows_refusals(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text, not a PNG")
    with live_service() as (url, _):
        browser.get(url + "/")
        browser.find_element(By.ID, "image").send_keys(str(bad))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 30).until(
            lambda d: d.find_element(By.ID, "error").is_displayed())
        message = browser.find_element(By.ID, "error").text
        assert message.startswith("422 (image)") and "PNG or JPEG" in message
