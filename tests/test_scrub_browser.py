"""Scrubbing in a real browser (Debian's Chromium through Playwright): a mouse drag of a direction slider plays the
slider's strip with no render request, the frame after release is the `/generate` render of that value, and a seed
change while a strip is loaded never shows the old seed's frames."""
from __future__ import annotations

import base64
import io
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.explore import API_FIELDS, ExploreState
from tools.browser import CHROMIUM, ROOT, serve

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)")
pytest.importorskip("playwright.sync_api")  # the browser/page fixtures (conftest) drive it

# Every change of the strip overlay, as the test sees it (not the app's own bookkeeping).
RECORD = """
() => {
  window.__shown = [];
  const rec = () => {
    const o = document.querySelector('#strip-frame');
    if (o && o.style.display === 'block') window.__shown.push([o.dataset.key, o.dataset.frame, performance.now()]);
  };
  new MutationObserver(rec).observe(document.querySelector('#strip-frame'), {attributes: true});
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scrub")
    env = dict(GRADIO_TEMP_DIR=str(tmp / "gradio"), GAN_CACHE_DIR=str(tmp / "cache"))
    if not (ROOT / "checkpoints" / "emoji64.safetensors").exists():
        from tests.conftest import tiny_checkpoint

        env["GAN_CHECKPOINT"] = str(tiny_checkpoint(tmp / "tiny.safetensors"))
    with open(tmp / "app.log", "w") as log, serve(env=env, log=log) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    c = Client(server, verbose=False)
    yield c
    c.close()


def explore_src(page) -> str | None:
    loc = page.locator("#explore-image img")
    return loc.first.get_attribute("src") if loc.count() else None


def wait_new_src(page, old: str | None, timeout: float = 30) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        src = explore_src(page)
        if src and src != old:
            return src
        page.wait_for_timeout(50)
    raise AssertionError(f"the Explore image did not change from {old!r}")


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def page_state(page) -> ExploreState:
    """The state the page shows, from its share link (exact: the link carries every value)."""
    link = page.locator("#share-link textarea, #share-link input").first.input_value()
    return ExploreState.from_query(dict(urllib.parse.parse_qsl(link.split("?", 1)[1])))


def generate(client, st: ExploreState) -> np.ndarray:
    return np.asarray(Image.open(client.predict(**dict(zip(API_FIELDS, st.values())), api_name="/generate")).convert("RGB"))


def shown_sprite_frame(page) -> np.ndarray:
    """The frame the overlay shows, cut from its sprite (a PNG data URL)."""
    url, frame = page.evaluate("() => { const o = document.querySelector('#strip-frame'); "
                               "return [o.style.backgroundImage, Number(o.dataset.frame)]; }")
    sprite = pixels(base64.b64decode(url.split("base64,", 1)[1].rstrip('")')))  # (R, N * R, 3)
    R = sprite.shape[0]
    return sprite[:, frame * R : (frame + 1) * R]


def strip_shown(page) -> None:
    """Wait until the page shows a frame of a strip (the overlay over the Explore image)."""
    page.wait_for_function("document.querySelector('#strip-frame').style.display === 'block'")


def drag(page, elem: str, frac0: float, frac1: float, moves: int = 61, pause_ms: int = 40, before_moves=None):
    box = page.locator(f"#{elem} input[type=range]").bounding_box()
    y = box["y"] + box["height"] / 2
    x = lambda f: box["x"] + 8 + (box["width"] - 16) * f  # noqa: E731 - the thumb's centre travels inside the track
    page.mouse.move(x(frac0), y)
    page.mouse.down()
    if before_moves:
        before_moves()
    for i in range(1, moves + 1):
        page.mouse.move(x(frac0 + (frac1 - frac0) * i / moves), y)
        page.wait_for_timeout(pause_ms)


def test_drag_plays_the_strip_without_requests_and_release_renders_its_exact_frame(server, page, client):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/queue/join" in r.url else None)
    page.goto(server)
    first = wait_new_src(page, None)
    page.evaluate(RECORD)
    during: list[int] = []

    def strip_ready() -> None:  # the strip arrives in answer to pointerdown; then count the drag's requests
        strip_shown(page)
        during.append(len(requests))

    drag(page, "dir0", 0.0, 1.0, before_moves=strip_ready)
    during.append(len(requests))
    shown = page.evaluate("() => window.__shown")
    page.mouse.up()
    frames = {f for _, f in [(k, f) for k, f, _ in shown]}
    assert during[1] - during[0] == 0, f"{during[1] - during[0]} requests during the drag"
    assert len(frames) >= 20, f"only {len(frames)} distinct frames shown"
    assert shown[-1][1] == "60"  # the right end: +3
    final = wait_new_src(page, first)
    exact = pixels(page.request.get(final).body())
    st = page_state(page)
    assert st.coeffs[0] == 3.0
    assert np.array_equal(exact, generate(client, st)), "the image after release is not /generate's"
    assert np.array_equal(shown_sprite_frame(page), exact), "the strip's last frame is not the exact render"
    # a frame in the middle of the strip is the exact render of its value, too
    page.evaluate("() => { window.__probe = document.querySelector('#strip-frame').style.backgroundImage; }")
    sprite = pixels(base64.b64decode(page.evaluate("() => window.__probe").split("base64,", 1)[1].rstrip('")')))
    R = sprite.shape[0]
    st.coeffs[0] = 0.7  # frame 37
    assert np.array_equal(sprite[:, 37 * R : 38 * R], generate(client, st))


def test_keyboard_moves_render_the_exact_frame_after_a_pause(server, page, client):
    page.goto(server)
    first = wait_new_src(page, None)
    rng = page.locator("#dir1 input[type=range]")
    rng.focus()
    for _ in range(3):
        rng.press("ArrowRight")
    final = wait_new_src(page, first)
    st = page_state(page)
    assert abs(st.coeffs[1] - 0.3) < 1e-9
    assert np.array_equal(pixels(page.request.get(final).body()), generate(client, st))


def test_a_seed_change_never_shows_the_old_seeds_frames(server, page, client):
    page.goto(server)
    first = wait_new_src(page, None)
    page.evaluate(RECORD)
    # load the strip of seed 0 and let go
    drag(page, "dir0", 0.5, 0.8, moves=10, before_moves=lambda: strip_shown(page))
    page.mouse.up()
    wait_new_src(page, first)
    old_keys = {k for k, _, _ in page.evaluate("() => window.__shown")}
    assert len(old_keys) == 1 and '"seed": 0' in next(iter(old_keys))
    page.evaluate("() => { window.__shown = []; }")
    # a new seed, and at once a drag on the same slider (before the seed's render may have arrived)
    seed = page.locator("#seed input")
    seed.fill("4321")
    seed.press("Enter")
    drag(page, "dir0", 0.8, 0.2, moves=40, pause_ms=50)
    page.mouse.up()
    shown = page.evaluate("() => window.__shown")
    keys = {k for k, _, _ in shown}
    assert not keys & old_keys, "a frame of the old seed's strip was shown after the seed changed"
    assert shown and all('"seed": 4321' in k for k in keys), keys  # the new seed's strip did play
    page.wait_for_function("document.querySelector('#share-link textarea, #share-link input').value.includes('seed=4321')")
    page.wait_for_timeout(500)
    st = page_state(page)
    assert st.seed == 4321
    assert np.array_equal(pixels(page.request.get(explore_src(page)).body()), generate(client, st))


def test_a_large_model_says_it_has_no_strips_and_renders_on_release(tmp_path, browser):
    """Above 128 px there are no strips: the page says so under the sliders, a drag shows no strip frame and the
    release renders the exact image as before."""
    from gradio_client import Client

    from tests.conftest import tiny_checkpoint

    env = dict(GRADIO_TEMP_DIR=str(tmp_path / "gradio"), GAN_CACHE_DIR=str(tmp_path / "cache"),
               GAN_CHECKPOINT=str(tiny_checkpoint(tmp_path / "big.safetensors", resolution=256)))
    with serve(env=env) as (url, _):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        first = wait_new_src(page, None)
        page.wait_for_function("document.querySelector('#strip').innerText.includes('off above 128 px')")
        page.evaluate(RECORD)
        drag(page, "dir0", 0.5, 1.0, moves=10)
        page.mouse.up()
        final = wait_new_src(page, first)
        assert page.evaluate("() => window.__shown") == []
        c = Client(url, verbose=False)
        assert np.array_equal(pixels(page.request.get(final).body()), generate(c, page_state(page)))
        c.close()
        page.close()


def test_the_psi_slider_scrubs_too(server, page, client):
    page.goto(server)
    first = wait_new_src(page, None)
    page.evaluate(RECORD)
    drag(page, "psi", 0.0, 1.0, moves=31, before_moves=lambda: strip_shown(page))
    page.mouse.up()
    frames = {f for _, f, _ in page.evaluate("() => window.__shown")}
    assert len(frames) >= 15 and "30" in frames  # psi 0 .. 1.5 in steps of 0.05: 31 frames, the last one shown
    final = wait_new_src(page, first)
    st = page_state(page)
    assert st.psi == 1.5
    exact = pixels(page.request.get(final).body())
    assert np.array_equal(exact, generate(client, st)) and np.array_equal(shown_sprite_frame(page), exact)
