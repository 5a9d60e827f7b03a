"""Screenshots of each tab for docs/ and the README, with the app as a user sees it.

    python -m tools.screenshots      # starts python app.py on a free port, drives Debian's Chromium
"""
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "gradio_api/info", timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "?seed=3&psi=0.7&c=1.5,0,0,-1")
            page.wait_for_function("document.querySelector('#explore-image img')")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(OUT / "explore.png"), full_page=True)
            page.get_by_role("tab", name="Interpolate").click()
            page.locator("#interp-go").click()
            page.wait_for_function("document.querySelector('#interp-gif img')", timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT / "interpolate.png"), full_page=True)
            page.get_by_role("tab", name="Fine-tune").click()
            page.locator("#ft-start").click()  # the app's default steps, as a new user runs it
            page.wait_for_function("document.querySelector('#ft-status').innerText.includes('finished')", timeout=300_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(OUT / "finetune.png"), full_page=True)
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"wrote {sorted(p.name for p in OUT.iterdir())} to {OUT}")


if __name__ == "__main__":
    main()
