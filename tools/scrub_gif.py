"""A short GIF of a scrub for the README: a mouse drag of the first direction slider, as Chromium shows it.

    python -m tools.scrub_gif [--seed 7] [--frames 40]     # -> docs/screenshots/scrub.gif
Starts `python app.py`, holds the slider down, moves it from one end to the other and back, and after each move
screenshots the slider and the Explore image (the strip's frame while held; the exact render after release),
stitched with Pillow.
"""
from __future__ import annotations

import argparse
import io

from PIL import Image
from playwright.sync_api import sync_playwright

from tools.browser import ROOT, launch_chromium, serve

OUT = ROOT / "docs" / "screenshots" / "scrub.gif"


def shot(page, clip: dict) -> Image.Image:
    return Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--frames", type=int, default=40)
    a = ap.parse_args()
    frames: list[Image.Image] = []
    with serve() as (url, _), sync_playwright() as p:
        b = launch_chromium(p)
        page = b.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url + f"?seed={a.seed}&psi=0.7")
        page.wait_for_function("document.querySelector('#explore-image img') && document.querySelector('#explore-image img').complete")
        page.wait_for_timeout(2000)
        slider = page.locator("#dir0")
        slider.scroll_into_view_if_needed()
        track = page.locator("#dir0 input[type=range]").bounding_box()
        y = track["y"] + track["height"] / 2
        x = lambda f: track["x"] + 8 + (track["width"] - 16) * f  # noqa: E731
        page.mouse.move(x(0.5), y)
        page.mouse.down()
        page.wait_for_function("document.querySelector('#strip-frame').style.display === 'block'")
        half = a.frames // 2
        path = [0.5 - 0.5 * i / (half // 2) for i in range(half // 2)] + [i / half for i in range(half + 1)] + \
               [1 - 0.5 * i / (half // 2) for i in range(half // 2 + 1)]
        for f in path:
            page.mouse.move(x(f), y)
            page.wait_for_timeout(30)
            img = page.locator("#explore-image img").bounding_box()
            sl = slider.bounding_box()
            top = shot(page, {"x": sl["x"], "y": sl["y"], "width": sl["width"], "height": sl["height"]})
            pic = shot(page, {"x": img["x"], "y": img["y"], "width": img["width"], "height": img["height"]})
            canvas = Image.new("RGB", (max(top.width, pic.width), top.height + pic.height + 8), "white")
            canvas.paste(top, (0, 0))
            canvas.paste(pic, ((canvas.width - pic.width) // 2, top.height + 8))
            frames.append(canvas)
        page.mouse.up()
        b.close()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pal = [f.quantize(colors=128, method=Image.Quantize.MEDIANCUT) for f in frames]
    pal[0].save(OUT, save_all=True, append_images=pal[1:], duration=90, loop=0, optimize=True)
    print(f"wrote {OUT} ({len(frames)} frames, {OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
