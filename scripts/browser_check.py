"""Checks `pixelrefer demo` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven
by Selenium) loads the page of the offline demo, opens the sample photo, draws a box on it by two clicks, asks about
it, waits for the streamed answer and the per-region report, and saves a screenshot.

    python scripts/browser_check.py [--screenshot docs/demo.png] [--chromium /usr/bin/chromium]

Exits 0 when the page showed the region's mask, an answer and its object-token count, and no error; 1 otherwise,
with one `error:` line saying which step failed (the screenshot is saved either way, to see why).
"""

import argparse
import logging
import math
import re
import socket
import sys
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from pixelrefer_hf.cli import build_parser
from pixelrefer_hf.demo.app import build_demo, launch_demo
from pixelrefer_hf.demo.command import load_demo_models


logger = logging.getLogger("browser_check")

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "src" / "pixelrefer_hf" / "assets" / "brooklyn_bridge.jpg"
BOX = (405, 215, 492, 385)  # x0, y0, x1, y1 in image pixels: the two corners clicked
QUESTION = "What is <region1>?"
WINDOW = (1280, 1760)
SCREENSHOT_WIDTH = 960
TIMEOUT_S = 120


class CheckFailed(Exception):
    """A step of the check did not give what the page should show."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_browser(chromium: Path, chromedriver: Path) -> webdriver.Chrome:
    """Headless Chromium through its matching chromedriver (no driver or browser download)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    return webdriver.Chrome(options=options, service=Service(executable_path=str(chromedriver)))


def wait_for(driver: webdriver.Chrome, what: str, condition) -> object:
    """The truthy value of `condition(driver)` once there is one, or `CheckFailed` naming `what`."""
    try:
        return WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.2).until(lambda d: _page_error(d) or condition(d))
    except TimeoutException:
        raise CheckFailed(f"timed out after {TIMEOUT_S} s waiting for {what}") from None


def _page_error(driver: webdriver.Chrome) -> None:
    """Raises `CheckFailed` with the text of an error message the page shows, if any."""
    toasts = driver.find_elements(By.CSS_SELECTOR, ".toast-body.error, .toast-wrap .error")
    if toasts:
        raise CheckFailed(f"the page shows an error: {' '.join(toasts[0].text.split())}")


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    elements = driver.find_elements(By.CSS_SELECTOR, selector)
    return elements[0].text if elements else ""


def click_pixel(driver: webdriver.Chrome, image: WebElement, x: int, y: int) -> None:
    """Clicks pixel `(x, y)` of the image shown by `image` (an `<img>`, possibly scaled)."""
    natural_width = driver.execute_script("return arguments[0].naturalWidth", image)
    scale = image.size["width"] / natural_width
    dx = math.floor((x + 0.5) * scale - image.size["width"] / 2)
    dy = math.floor((y + 0.5) * scale - image.size["height"] / 2)
    ActionChains(driver).move_to_element_with_offset(image, dx, dy).click().perform()


def run_check(driver: webdriver.Chrome, url: str) -> str:
    """Draws a box, asks, and returns the answer; raises `CheckFailed` at the first step that fails."""
    driver.get(url)
    wait_for(driver, "the page", lambda d: d.find_elements(By.CSS_SELECTOR, "#image input[type=file]"))
    if "Random weights" not in text_of(driver, "#models-note"):
        raise CheckFailed("the page does not say that the offline demo's weights are random")
    driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(IMAGE))
    wait_for(driver, "the image on the canvas", lambda d: "No region yet" in text_of(d, "#status"))
    driver.find_element(By.XPATH, "//*[@id='mode']//label[.//*[normalize-space()='Box']]").click()

    canvas = driver.find_element(By.CSS_SELECTOR, "#canvas img")
    click_pixel(driver, canvas, BOX[0], BOX[1])
    wait_for(driver, "the first box corner", lambda d: "Box corner at" in text_of(d, "#status"))
    click_pixel(driver, driver.find_element(By.CSS_SELECTOR, "#canvas img"), BOX[2] - 1, BOX[3] - 1)
    status = wait_for(
        driver, "the box's SAM2 mask", lambda d: re.search(r"Region 1 \(box ([\d,]+)\)", text_of(d, "#status"))
    )
    drawn = [int(value) for value in status.group(1).split(",")]
    if max(abs(a - b) for a, b in zip(drawn, BOX)) > 2:
        raise CheckFailed(f"the clicks at the corners of box {list(BOX)} drew box {drawn}")
    logger.info("%s", status.group(0))

    question = driver.find_element(By.CSS_SELECTOR, "#question textarea")
    question.clear()
    question.send_keys(QUESTION)
    driver.find_element(By.CSS_SELECTOR, "#ask").click()
    report = wait_for(driver, "the object-token report", lambda d: re.search(r"\b(\d+)\s*$", _report_tokens(d)))
    answer = wait_for(
        driver,
        "the answer",
        lambda d: d.find_element(By.CSS_SELECTOR, "#answer textarea").get_attribute("value").strip(),
    )
    logger.info("answer %r, %s object tokens", answer, report.group(1))
    return answer


def _report_tokens(driver: webdriver.Chrome) -> str:
    """The `object tokens` cell of the report's first row, or `""`."""
    headers = driver.find_elements(By.CSS_SELECTOR, "#report th[data-testid^='header-']")
    titles = [header.get_attribute("title") for header in headers]
    if "object tokens" not in titles:
        return ""
    return text_of(driver, f"#report [data-testid='cell-0-{titles.index('object tokens')}']").strip()


def save_screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The page, scaled to `SCREENSHOT_WIDTH` wide and reduced to a 256-colour PNG (small enough for the README)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    with Image.open(path) as page:
        page = page.convert("RGB")
    height = round(page.height * SCREENSHOT_WIDTH / page.width)
    page = page.resize((SCREENSHOT_WIDTH, height), Image.Resampling.LANCZOS)
    page.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "demo.png", help="PNG to save")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"), help="Chromium binary")
    parser.add_argument("--chromedriver", type=Path, default=Path("/usr/bin/chromedriver"), help="its chromedriver")
    args = parser.parse_args(argv)
    logging.basicConfig(format="browser_check: %(message)s")
    logger.setLevel(logging.INFO)
    for binary in (args.chromium, args.chromedriver):
        if not binary.exists():
            print(f"error: {binary} not found; install Debian's chromium and chromium-driver", file=sys.stderr)
            return 1

    demo = build_demo(load_demo_models(build_parser().parse_args(["demo", "--device", "cpu"])), max_new_tokens=16)
    launch_demo(demo, "127.0.0.1", free_port())
    try:
        driver = start_browser(args.chromium, args.chromedriver)
    except WebDriverException as error:
        demo.close()
        print(f"error: cannot start {args.chromium}: {' '.join(str(error.msg).split())}", file=sys.stderr)
        return 1
    try:
        run_check(driver, demo.local_url)
    except (CheckFailed, WebDriverException) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    finally:
        save_screenshot(driver, args.screenshot)
        driver.quit()
        demo.close()
    logger.info("saved %s", args.screenshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
