"""Scrubbing in headless Chromium: what a mouse drag of a direction slider shows, today's server against this one, in
the same run (the machine is shared: the load average is recorded beside every figure).

    python -m bench.scrub [--baseline-ref cae3301] [--drags 3] [--trials 15]

- drag: 61 pointer moves over ~4 s from one end of `#dir0` to the other, idle and while another user's 60-s fine-tune
  runs. Pictures = changes of what the page shows (the Explore image's src, or the strip overlay's frame); a move
  "shows a new picture" when the picture changed before the next move. Requests = /queue/join posts from pointerdown
  to pointerup. Frame rate = requestAnimationFrame callbacks during the drag.
- strip ready: pointerdown -> the overlay shows a frame, p50/p95, for a slider whose strip was prefetched after the
  last render (warm) and for one that was not (cold: rendered on pointerdown).
- seed -> pixels: a new value in the seed box -> the new image loaded (both ends timed in the page), this app against
  the bare Gradio floor (bench/bare_app.py), this app without the model (bench/floor_app.py) and today's server, all
  four running at once and measured trial by trial in turn.
Writes bench/results/scrub.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.baseline import checkout, load_average
from bench.common import save_result
from tools.browser import launch_chromium, serve

OBSERVE = """
() => {
  window.__pics = []; window.__moves = []; window.__raf = 0; window.__down = null; window.__shownAt = null;
  let last = null;
  const pic = () => {
    const o = document.querySelector('#strip-frame');
    const img = document.querySelector('#explore-image img');
    const id = o && o.style.display === 'block' ? 'strip:' + o.dataset.key + ':' + o.dataset.frame : (img ? img.src : null);
    if (id && id !== last) { last = id; window.__pics.push(performance.now()); }
    if (o && o.style.display === 'block' && window.__down !== null && window.__shownAt === null) window.__shownAt = performance.now();
  };
  new MutationObserver(pic).observe(document.body, {subtree: true, attributes: true, childList: true,
                                                    attributeFilter: ['src', 'style', 'data-frame']});
  document.addEventListener('pointermove', () => window.__moves.push(performance.now()), true);
  document.addEventListener('pointerdown', () => { window.__down = performance.now(); window.__shownAt = null; }, true);
  const tick = () => { window.__raf += 1; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}
"""


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * (len(xs) - 1)))], 1) if xs else None


def wait_image(page, old: str | None, timeout_s: float = 30) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        src = page.evaluate("() => { const i = document.querySelector('#explore-image img'); return i && i.complete ? i.src : null; }")
        if src and src != old:
            return src
        page.wait_for_timeout(20)
    raise TimeoutError(f"no new image after {timeout_s} s (still {old})")


def drag(page, requests: list[float], moves: int = 61, seconds: float = 4.0) -> dict:
    """One drag end to end of #dir0 (and back to the middle afterwards, by keyboard-free release)."""
    rng = page.locator("#dir0 input[type=range]")
    rng.scroll_into_view_if_needed()
    box = rng.bounding_box()
    y = box["y"] + box["height"] / 2
    x = lambda f: box["x"] + 8 + (box["width"] - 16) * f  # noqa: E731
    page.mouse.move(x(0.0), y)
    page.evaluate("() => { window.__pics = []; window.__moves = []; window.__raf0 = window.__raf; }")
    n0 = len(requests)
    t0 = page.evaluate("() => performance.now()")
    page.mouse.down()
    for i in range(1, moves + 1):
        page.mouse.move(x(i / moves), y)
        page.wait_for_timeout(seconds * 1000 / moves)
    n1 = len(requests)
    page.mouse.up()
    t1, pics, mv, raf = page.evaluate("() => [performance.now(), window.__pics, window.__moves, window.__raf - window.__raf0]")
    mv = [m for m in mv if m >= t0][:moves]
    bounds = mv + [t1]
    new_pic_moves = sum(1 for a, b in zip(bounds, bounds[1:]) if any(a <= p < b for p in pics))
    dur = (t1 - t0) / 1000
    page.wait_for_timeout(1500)  # the exact render on release, and the next prefetch
    return {"moves": len(mv), "new_picture_moves": new_pic_moves, "pictures": len([p for p in pics if t0 <= p <= t1]),
            "seconds": round(dur, 2), "requests": n1 - n0, "raf_fps": round(raf / dur, 1)}


def drags(page, requests: list[float], n: int) -> dict:
    runs = [drag(page, requests) for _ in range(n)]
    moves = sum(r["moves"] for r in runs)
    return {"drags": len(runs), "share_of_moves_with_new_picture": round(sum(r["new_picture_moves"] for r in runs) / moves, 3),
            "pictures_per_s": round(statistics.mean(r["pictures"] / r["seconds"] for r in runs), 1),
            "requests_per_drag": round(statistics.mean(r["requests"] for r in runs), 1),
            "raf_fps": round(statistics.mean(r["raf_fps"] for r in runs), 1), "load_avg": load_average(), "runs": runs}


def start_finetune(url: str, seconds: int = 60):
    """Another user's fine-tune of `seconds` (a gradio_client job); returns once it trains."""
    from gradio_client import Client

    c = Client(url, verbose=False)
    job = c.submit(data_source="bundled set", bundled="sketch-faces", seconds=seconds, api_name="/finetune")
    t0 = time.time()
    while not any("step" in str(o[0]) for o in job.outputs()) and time.time() - t0 < 120:
        if job.done():
            raise SystemExit(f"the fine-tune did not start: {job.outputs()[-1:]}")
        time.sleep(0.2)
    return c, job


def strip_ready(page, trials: int) -> dict:
    """pointerdown -> overlay shows a frame. Each trial: a new seed; wait for its image and the prefetch; then
    press the prefetched slider (warm) or another one (cold)."""
    out: dict[str, list[float]] = {"warm": [], "cold": []}
    seed = page.locator("#seed input")
    for i in range(trials):
        for kind, elem in (("warm", "dir0"), ("cold", f"dir{1 + i % 5}")):
            old = page.evaluate("() => document.querySelector('#explore-image img').src")
            seed.fill(str(50_000 + 2 * i + (kind == "cold")))
            wait_image(page, old)
            page.wait_for_timeout(1200)  # the prefetch of dir0's strip (the last slider used) has landed
            rng = page.locator(f"#{elem} input[type=range]")
            rng.scroll_into_view_if_needed()
            box = rng.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
            page.mouse.down()
            try:
                page.wait_for_function("window.__shownAt !== null", timeout=10_000)
                out[kind].append(page.evaluate("() => window.__shownAt - window.__down"))
            finally:
                page.mouse.up()
            page.wait_for_timeout(800)
            if kind == "cold":  # make dir0 the last slider used again, so the next warm trial finds it prefetched
                page.locator("#dir0 input[type=range]").focus()
                page.wait_for_timeout(400)
    return {k: {"p50_ms": pct(v, 0.5), "p95_ms": pct(v, 0.95), "trials": len(v)} for k, v in out.items()} | {
        "load_avg": load_average()}


# In the page: the time of the last input event in the seed box, and the time the Explore image with a new src has
# loaded (its `load` event, or at once when the browser had it complete already), both from performance.now().
TYPED = """() => { document.addEventListener('input', (e) => {
  if (e.target.closest('#seed')) window.__typed = performance.now(); }, true);
  let seen = null;
  const check = () => { const img = document.querySelector('#explore-image img');
    if (!img || img.src === seen) return;
    seen = img.src;
    const mark = () => { if (img.src === seen) { window.__loaded = performance.now(); window.__loadedSrc = seen; } };
    img.complete ? mark() : img.addEventListener('load', mark, {once: true}); };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                      attributeFilter: ['src']});
  check(); }"""


def seed_trial(page, seed: int) -> float:
    """A new value in the seed box -> the new image loaded, in ms, both ends timed in the page (the poll below
    only waits; it does not add its interval to the figure)."""
    old = page.evaluate("() => document.querySelector('#explore-image img').src")
    page.locator("#seed input").fill(str(seed))
    page.wait_for_function("(old) => window.__loadedSrc && window.__loadedSrc !== old && window.__loaded > window.__typed",
                           arg=old, timeout=30_000)
    return page.evaluate("() => window.__loaded - window.__typed")


def seed_side_by_side(browser, roots: dict, trials: int) -> dict:
    """Seed -> pixels for several servers running at once, one trial each in turn (the shared machine's load
    drifts within seconds, so the apps are compared trial by trial, not run after run)."""
    from contextlib import ExitStack

    lat: dict[str, list[float]] = {k: [] for k in roots}
    with ExitStack() as stack:
        pages = {}
        for name, (script, root) in roots.items():
            url, _ = stack.enter_context(serve(script, cwd=root))
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            wait_image(page, None)
            page.evaluate(TYPED)
            pages[name] = page
        time.sleep(3)
        for i in range(trials):
            for name, page in pages.items():
                lat[name].append(seed_trial(page, 10_000 + i))
                page.wait_for_timeout(1200)  # the trial's prefetch (strips) settles before the next app's trial
        for page in pages.values():
            page.close()
    out = {k: {"p50_ms": pct(v, 0.5), "p90_ms": pct(v, 0.9), "trials": len(v)} for k, v in lat.items()}
    return out | {"load_avg": load_average()}


def measure_app(browser, root, drags_n: int, trials: int, strips: bool) -> dict:
    res: dict = {}
    with serve(cwd=root) as (url, _):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        requests: list[float] = []
        page.on("request", lambda r: requests.append(time.time()) if "/queue/join" in r.url else None)
        page.goto(url)
        wait_image(page, None)
        page.wait_for_timeout(1500)
        page.evaluate(OBSERVE)
        res["drag_idle"] = drags(page, requests, drags_n)
        if strips:
            res["strip_ready"] = strip_ready(page, trials)
        c, job = start_finetune(url)
        try:
            res["drag_during_finetune"] = drags(page, requests, drags_n)
            res["finetune_running_throughout"] = not job.done()
        finally:
            job.cancel()
            c.close()
        page.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-ref", default="cae3301", help="today's server: the commit before scrub strips")
    ap.add_argument("--drags", type=int, default=3)
    ap.add_argument("--trials", type=int, default=15)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    res: dict = {"baseline_ref": a.baseline_ref, "load_avg_start": load_average()}
    with sync_playwright() as p, checkout(a.baseline_ref) as today_root:
        browser = launch_chromium(p)
        res["seed_to_pixels"] = seed_side_by_side(browser, {"bare": (("bench/bare_app.py",), None),
                                                            "no_model": (("-m", "bench.floor_app"), None),
                                                            "strips": (("app.py",), None),
                                                            "today": (("app.py",), today_root)}, a.trials)
        print("seed -> pixels:", res["seed_to_pixels"], flush=True)
        res["strips"] = measure_app(browser, None, a.drags, a.trials, strips=True)
        print("strips:", res["strips"], flush=True)
        res["today"] = measure_app(browser, today_root, a.drags, a.trials, strips=False)
        print("today:", res["today"], flush=True)
        browser.close()
    floor = res["seed_to_pixels"]["bare"]["p50_ms"]
    res["seed_ratio_p50"] = {k: round(res["seed_to_pixels"][k]["p50_ms"] / floor, 2) for k in ("no_model", "strips", "today")}
    res["load_avg_end"] = load_average()
    print(save_result("scrub", res).read_text())


if __name__ == "__main__":
    main()
