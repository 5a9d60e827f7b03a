"""Screenshots of each tab for docs/ and the README, with the app as a user sees it.

    python -m tools.screenshots      # starts python app.py on a free port, drives Debian's Chromium
"""

from playwright.sync_api import sync_playwright

from tools.browser import ROOT, launch_chromium, serve

OUT = ROOT / "docs" / "screenshots"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with serve() as (url, _), sync_playwright() as p:
        b = launch_chromium(p)
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
    print(f"wrote {sorted(f.name for f in OUT.iterdir())} to {OUT}")


if __name__ == "__main__":
    main()
