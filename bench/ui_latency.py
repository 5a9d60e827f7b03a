"""UI latency in headless Chromium: slider release -> new pixels, for this app and a bare Gradio app returning a
same-size image, plus the time from `python app.py` to the first image on the page.

    python -m bench.ui_latency [--trials 20]
Both apps wire the slider the same way (.release and .input with trigger_mode="always_last"). Each trial clicks a
new spot on the slider track (the value jumps; an `input` then a `release` event fire) and measures, inside the
page, from pointerup to the last change of the image's src (settled for 1 s).
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.common import save_result
from tools.browser import launch_chromium, serve

OBSERVE = """
() => {
  window.__changes = [];
  window.__up = null;
  document.addEventListener('pointerup', () => { window.__up = performance.now(); }, true);
  const root = document.querySelector('#explore-image');
  new MutationObserver(() => {
    const img = root.querySelector('img');
    if (img && img.src !== window.__lastSrc) { window.__lastSrc = img.src; window.__changes.push(performance.now()); }
  }).observe(root, {subtree: true, attributes: true, childList: true});
}
"""


def measure(page, url: str, trials: int) -> tuple[list[float], float]:
    t_nav = time.perf_counter()
    page.goto(url)
    page.wait_for_function("document.querySelector('#explore-image img') && document.querySelector('#explore-image img').src")
    first_image_s = time.perf_counter() - t_nav
    page.wait_for_timeout(1500)
    page.evaluate(OBSERVE)
    box = page.locator("#dir0 input[type=range]").bounding_box()
    out = []
    for i in range(trials):
        frac = 0.15 + 0.7 * ((i * 7) % trials) / trials
        page.evaluate("() => { window.__changes = []; window.__up = null; }")
        page.mouse.click(box["x"] + box["width"] * frac, box["y"] + box["height"] / 2)
        page.wait_for_timeout(1000)
        up, changes = page.evaluate("() => [window.__up, window.__changes]")
        after = [c for c in changes if c >= up]
        if up is not None and after:
            out.append(after[-1] - up)
    return out, first_image_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    res: dict = {}
    with sync_playwright() as p:
        browser = launch_chromium(p)
        for name, script in (("bare", ("bench/bare_app.py",)), ("app", ("app.py",))):
            with serve(script) as (url, server_up):
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                lat, first_image = measure(page, url, a.trials)
                res[name] = {"p50_ms": round(statistics.median(lat), 1), "p90_ms": round(sorted(lat)[int(0.9 * (len(lat) - 1))], 1),
                             "trials": len(lat), "server_up_s": round(server_up, 2),
                             "start_to_first_image_s": round(server_up + first_image, 2)}
                page.close()
        browser.close()
    res["ratio_p50"] = round(res["app"]["p50_ms"] / res["bare"]["p50_ms"], 3)
    print(save_result("ui-latency", res).read_text())


if __name__ == "__main__":
    main()
