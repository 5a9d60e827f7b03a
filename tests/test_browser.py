"""The app in a real browser: Debian's Chromium driven by Playwright's Python package (no browser download).

Starts `python app.py` as a new user would (shipped checkpoint if present, else a tiny one), on a free port.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tools.browser import CHROMIUM, ROOT, serve

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)")
pytest.importorskip("playwright.sync_api")  # the browser/page fixtures (conftest) drive it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    env = dict(GRADIO_TEMP_DIR=str(tmp / "gradio"), GAN_CACHE_DIR=str(tmp / "cache"))
    if not (ROOT / "checkpoints" / "emoji64.safetensors").exists():
        import torch

        from gan.checkpoint import save_checkpoint
        from gan.networks import Discriminator, Generator
        from tests.conftest import tiny_model_cfg

        cfg = tiny_model_cfg(16)
        torch.manual_seed(0)
        env["GAN_CHECKPOINT"] = str(save_checkpoint(tmp / "tiny.safetensors", cfg, Generator(cfg), None, Discriminator(cfg)))
    # A second model for the picker: an NVlabs-format 256 px pickle, imported as a user would.
    from gan.importer import import_checkpoint
    from tests.import_fixtures import write_fixture

    (tmp / "models").mkdir()
    import_checkpoint(write_fixture("nv256", tmp), tmp / "models" / "nv256.safetensors", name="Imported NV256",
                      license="test fixture")
    from tests.conftest import tiny_conditional_checkpoint

    tiny_conditional_checkpoint(tmp / "models" / "cond.safetensors", name="Tiny conditional")
    env["GAN_CHECKPOINT_DIR"] = str(tmp / "models")
    with open(tmp / "app.log", "w") as log, serve(env=env, log=log) as (url, _):
        yield url


def image_src(page, elem: str) -> str | None:
    loc = page.locator(f"#{elem} img")
    return loc.first.get_attribute("src") if loc.count() else None


def wait_new_src(page, elem: str, old: str | None, timeout: float = 30) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        src = image_src(page, elem)
        if src and src != old:
            return src
        page.wait_for_timeout(100)
    raise AssertionError(f"#{elem} image did not change from {old!r}")


def image_bytes(page, src: str) -> bytes:
    return page.request.get(src).body()


def test_page_loads_and_slider_changes_image(server, page):
    page.goto(server)
    first = wait_new_src(page, "explore-image", None)
    # drag the first direction slider and let go (a 'release' event)
    box = page.locator("#dir0 input[type=range]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    second = wait_new_src(page, "explore-image", first)
    assert image_bytes(page, first) != image_bytes(page, second)


def test_share_link_restores_the_same_image(server, page, browser):
    page.goto(server + "?seed=42&psi=0.5&c=1.5,0,-1")
    src = wait_new_src(page, "explore-image", None)
    page.wait_for_function("document.querySelector('#share-link textarea, #share-link input').value.includes('seed=42')")
    link = page.locator("#share-link textarea, #share-link input").first.input_value()
    assert "psi=0.5" in link and "c=1.5,0,-1" in link
    other = browser.new_page()
    other.goto(link)
    src2 = wait_new_src(other, "explore-image", None)
    assert image_bytes(page, src) == image_bytes(other, src2)
    other.close()


def test_interpolation_yields_a_gif(server, page):
    page.goto(server)
    wait_new_src(page, "explore-image", None)
    page.get_by_role("tab", name="Interpolate").click()
    page.locator("#interp-go").click()
    src = wait_new_src(page, "interp-gif", None, timeout=60)
    assert image_bytes(page, src)[:6] in (b"GIF89a", b"GIF87a")


def set_slider(page, elem: str, value: int) -> None:
    box = page.locator(f"#{elem} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_finetune_live_updates_stop_and_explore(server, page):
    page.goto(server)
    first_explore = wait_new_src(page, "explore-image", None)
    page.get_by_role("tab", name="Fine-tune").click()
    set_slider(page, "ft-seconds", 25)
    page.locator("#ft-start").click()
    seen: dict[str, set] = {"curves": set(), "kid": set(), "grid": set(), "status": set()}
    t0 = time.time()
    while time.time() - t0 < 180:
        curves, kid = page.evaluate("() => ['#ft-plot', '#ft-kid'].map(s => document.querySelector(s).innerHTML)")
        seen["curves"].add(curves)
        seen["kid"].add(kid)
        seen["grid"].add(image_src(page, "ft-grid"))
        status = page.locator("#ft-status").inner_text()
        seen["status"].add(status)
        if "finished" in status:
            break
        page.wait_for_timeout(250)
    assert "finished at step" in page.locator("#ft-status").inner_text()
    # the curves, the KID curve, the grid and the progress line each changed at least three times during the run
    counts = {k: len(v - {None, ""}) for k, v in seen.items()}
    assert min(counts.values()) >= 3, counts
    assert image_src(page, "ft-targets")  # the user's images beside the grid
    page.locator("#ft-download a").first.wait_for()
    assert image_src(page, "ft-compare")
    # explore the fine-tuned model: the banner says so and the explore image is re-rendered
    page.locator("#ft-explore").click()
    page.wait_for_function("document.querySelector('#model-banner').innerText.includes('fine-tuned')")
    assert wait_new_src(page, "explore-image", first_explore)

    # a long run stops on request and keeps its weights
    page.get_by_role("tab", name="Fine-tune").click()
    set_slider(page, "ft-seconds", 600)
    page.locator("#ft-start").click()
    page.wait_for_function("document.querySelector('#ft-status').innerText.includes('step 2 ')", timeout=60_000)
    page.locator("#ft-stop").click()
    page.wait_for_function("document.querySelector('#ft-status').innerText.includes('stopped at step')", timeout=60_000)


def test_bad_upload_shows_error_and_app_keeps_working(server, page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    page.goto(server)
    first = wait_new_src(page, "explore-image", None)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("radio", name="upload").check()
    page.locator("#ft-upload input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(1000)
    page.locator("#ft-start").click()
    toast = page.locator("[data-testid=toast-body]")
    toast.first.wait_for()
    assert "usable image" in toast.first.inner_text()
    page.get_by_role("tab", name="Explore").click()
    seed = page.locator("#seed input")
    seed.fill("77")
    seed.press("Enter")
    assert wait_new_src(page, "explore-image", first)


def slider_max(page, elem: str) -> int:
    return int(float(page.locator(f"#{elem} input[type=range]").get_attribute("max")))


def test_model_picker_switches_to_an_imported_model_and_back(server, page):
    page.goto(server)
    first = wait_new_src(page, "explore-image", None)
    shipped_max = slider_max(page, "layer-end")
    banner = page.locator("#model-banner").inner_text()
    page.locator("#model-picker input").click()
    page.get_by_role("option", name="Imported NV256").click()
    page.wait_for_function("document.querySelector('#model-banner').innerText.includes('Imported NV256')")
    imported = wait_new_src(page, "explore-image", first)
    assert "256 px" in page.locator("#model-banner").inner_text()
    page.wait_for_function("document.querySelector('#layer-end input[type=range]').max == '14'")  # 256 px: 14 ws
    assert slider_max(page, "layer-end") == 14 != shipped_max
    assert image_bytes(page, imported) != image_bytes(page, first)
    # and back: the first model's banner, its slider range and its image
    page.locator("#model-picker input").click()
    page.get_by_role("option").first.click()
    page.wait_for_function(f"document.querySelector('#layer-end input[type=range]').max == '{shipped_max}'")
    back = wait_new_src(page, "explore-image", imported)
    assert page.locator("#model-banner").inner_text() == banner
    assert image_bytes(page, back) == image_bytes(page, first)


def test_category_picker_changes_the_image(server, page):
    """A conditional model shows Category and Style pickers; picking a category draws a new image, and the share
    link carries it."""
    page.goto(server)
    first = wait_new_src(page, "explore-image", None)
    page.locator("#model-picker input").click()
    page.get_by_role("option", name="Tiny conditional").click()
    page.wait_for_function("document.querySelector('#model-banner').innerText.includes('Tiny conditional')")
    before = wait_new_src(page, "explore-image", first)
    assert page.locator("#category").is_visible() and page.locator("#style").is_visible()
    page.locator("#category input").click()
    page.get_by_role("option", name="flag (9)", exact=True).click()
    after = wait_new_src(page, "explore-image", before)
    assert image_bytes(page, after) != image_bytes(page, before)
    page.wait_for_function("document.querySelector('#share-link textarea, #share-link input').value.includes('cat=flag')")
