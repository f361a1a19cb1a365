"""The page of rtseg serve in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
upload an image, wait for the overlay, check what a person sees against the API's own answer, side by side too.

Skipped, with the reason, where the browser or Selenium is missing; ``python3 tasks.py test`` installs the browser
where it can (as root with apt-get)."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="rtseg serve needs the serve extra: pip install 'rtseg[serve]'")
httpx = pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install 'rtseg[test]')")

from serve_process import ServerProcess, png_bytes, scene  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1500,1100"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"no headless browser: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver; "
                    f"python3 tasks.py test installs them when run as root)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except Exception as exc:  # a browser that cannot start here is an environment without a browser, not a failure of rtseg
        pytest.skip(f"headless Chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(["--model", "fplnet@camvid", "--model", "erfnet@camvid", "--backend", "torch", "--threads", "1"],
                         tmp_path_factory.mktemp("serve-browser"))
    yield proc
    proc.stop()


def _wait(driver, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _panel(driver, panel_id):
    from selenium.webdriver.common.by import By

    panel = driver.find_element(By.ID, panel_id)
    overlay = panel.find_element(By.CSS_SELECTOR, "img.overlay").get_attribute("src")
    names = [li.find_element(By.CSS_SELECTOR, ".name").text for li in panel.find_elements(By.CSS_SELECTOR, "ul.classes li")]
    latency = panel.find_element(By.CSS_SELECTOR, ".latency")
    return {"title": panel.find_element(By.CSS_SELECTOR, ".title").text, "overlay": overlay, "legend": names,
            "latency_ms": latency.get_attribute("data-ms"), "latency_text": latency.text}


def _decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,"), url[:60]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _present(server, model: str, data: bytes) -> list[str]:
    labels = np.asarray(Image.open(io.BytesIO(httpx.post(f"{server.url}/v1/segment/{model}?output=labels",
                                                         files={"image": ("a.png", data)}, timeout=60).content)))
    names = {m["name"]: [c["name"] for c in m["classes"]] for m in httpx.get(f"{server.url}/models").json()["models"]}[model]
    return sorted(names[i] for i in np.unique(labels))


def test_page_uploads_an_image_and_shows_overlay_legend_and_latency(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    rgb, _ = scene(6)
    upload = tmp_path / "street.png"
    Image.fromarray(rgb).save(upload)
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    browser.find_element(By.ID, "file").send_keys(str(upload))
    _wait(browser, lambda d: d.find_element(By.ID, "panel-a").get_attribute("data-state") in ("done", "error"))
    a = _panel(browser, "panel-a")
    assert browser.find_element(By.ID, "panel-a").get_attribute("data-state") == "done", a["latency_text"]
    overlay = _decode_data_url(a["overlay"])
    assert overlay.shape == (360, 480, 3)
    assert a["title"] == "fplnet"
    assert sorted(a["legend"]) == _present(server, "fplnet", upload.read_bytes())
    assert float(a["latency_ms"]) > 0 and "ms" in a["latency_text"]

    # two networks side by side on the same image
    browser.find_element(By.ID, "compare").click()
    _wait(browser, lambda d: d.find_element(By.ID, "panel-b").get_attribute("data-state") == "done"
          and d.find_element(By.ID, "panel-a").get_attribute("data-state") == "done")
    b = _panel(browser, "panel-b")
    assert b["title"] == "erfnet" and _decode_data_url(b["overlay"]).shape == (360, 480, 3)
    assert sorted(b["legend"]) == _present(server, "erfnet", upload.read_bytes())
    assert float(b["latency_ms"]) > 0

    # a bundled sample scene instead of a file
    browser.find_element(By.CSS_SELECTOR, "#samples button[data-sample='1']").click()
    _wait(browser, lambda d: "sample-1" in d.find_element(By.ID, "input-info").text
          and d.find_element(By.ID, "panel-a").get_attribute("data-state") == "done")
    sample = httpx.get(f"{server.url}/samples/1.png").content
    assert sorted(_panel(browser, "panel-a")["legend"]) == _present(server, "fplnet", sample)

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 800
    print(f"screenshot: {shot}")


def test_page_shows_the_servers_error(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.png"
    bad.write_bytes(png_bytes(scene(0, (60, 80))[0])[:300])  # a truncated PNG
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    _wait(browser, lambda d: d.find_element(By.ID, "panel-a").get_attribute("data-state") == "error")
    assert "truncated" in _panel(browser, "panel-a")["latency_text"]
    assert httpx.get(f"{server.url}/health").status_code == 200
