"""The app's public API through gradio_client, against an in-process server on a tiny checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gan.checkpoint import load_checkpoint

pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(api_client):
    return api_client


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_by_keyword(client):
    a = load(client.predict(seed=3, psi=0.7, api_name="/generate"))
    b = load(client.predict(seed=3, psi=0.7, api_name="/generate"))
    c = load(client.predict(seed=4, psi=0.7, api_name="/generate"))
    assert a.shape == (16, 16, 3)  # native resolution; the page upscales it
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # psi = 0 collapses every seed onto w_avg: the same image
    assert np.array_equal(load(client.predict(seed=1, psi=0.0, api_name="/generate")),
                          load(client.predict(seed=2, psi=0.0, api_name="/generate")))


def test_generate_sliders_and_mixing_change_the_image(client):
    base = load(client.predict(seed=5, psi=1.0, api_name="/generate"))
    moved = load(client.predict(seed=5, psi=1.0, c0=3.0, api_name="/generate"))
    assert not np.array_equal(base, moved)
    pca = load(client.predict(seed=5, psi=1.0, method="ganspace", c0=3.0, api_name="/generate"))
    assert not np.array_equal(moved, pca)
    mixed = load(client.predict(seed=5, psi=1.0, mix_seed=9, mix_start=3, mix_end=6, api_name="/generate"))
    assert not np.array_equal(base, mixed)


def test_generate_rejects_bad_parameters(client):
    with pytest.raises(Exception, match="greater than maximum value 1.5"):
        client.predict(seed=1, psi=5.0, api_name="/generate")
    with pytest.raises(Exception, match="loud"):
        client.predict(seed=1, noise_mode="loud", api_name="/generate")
    # the server keeps serving
    assert load(client.predict(seed=1, api_name="/generate")).shape == (16, 16, 3)


def test_interpolate_returns_strip_gif_and_video(client):
    strip, gif, video = client.predict(seeds="1,2,3", frames_per_segment=4, loop=True, api_name="/interpolate")
    im = Image.open(gif)
    assert im.format == "GIF" and im.n_frames == 12
    assert load(strip).shape[0] > 0 and str(video).endswith((".mp4", ".webp"))
    with pytest.raises(Exception, match="keyframe"):
        client.predict(seeds="1", api_name="/interpolate")


def test_finetune_streams_updates_and_returns_a_checkpoint(client):
    job = client.submit(data_source="bundled set", bundled="hearts", steps=6, mirror=True, api_name="/finetune")
    outputs = list(job)
    assert len(outputs) >= 3
    plots = [o[1] for o in outputs if o[1] is not None]
    grids = [o[2] for o in outputs if o[2] is not None]
    assert len(plots) >= 2 and len(grids) >= 2
    status, _, _, compare, ckpt_file, kid, _ = outputs[-1]
    targets = [o[6] for o in outputs if isinstance(o[6], str)]
    assert targets and load(targets[0]).shape[1] > load(targets[0]).shape[0]  # the user's images, sent at the start
    assert "finished at step 6" in status
    assert load(compare).shape[1] > load(compare).shape[0]  # two rows of 8 seeds
    ck = load_checkpoint(ckpt_file if isinstance(ckpt_file, str) else ckpt_file["path"])
    assert ck.meta["step"] == 6 and ck.meta["dataset"] == "hearts" and ck.D is not None
    assert ck.meta["train"]["xflip"] is True  # the Options checkbox reached the run's config


def test_finetune_bad_upload_is_a_clear_error(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(Exception, match="usable image"):
        client.predict(data_source="upload", uploads=[handle_file(str(bad))], steps=5, api_name="/finetune")
    assert load(client.predict(seed=2, api_name="/generate")).shape == (16, 16, 3)


def test_invert_then_explore_the_inverted_image(client):
    from gradio_client import handle_file

    target = client.predict(seed=3, psi=1.0, api_name="/generate")
    outputs = list(client.submit(image_path=handle_file(target), steps=100, wplus_steps=100, api_name="/invert"))
    status, _, frame, source, psi = outputs[-1]
    assert "PSNR" in status and source == "image" and psi == 1.0
    assert len([o for o in outputs if o[2] is not None]) >= 3  # live reconstructions
    rebuilt = load(client.predict(seed=0, psi=1.0, source="image", api_name="/generate"))
    err = np.abs(rebuilt.astype(float) - load(target).astype(float)).mean()
    assert err < 12, err  # close to the uploaded image (seed 0 is ignored for source=image)
    edited = load(client.predict(seed=0, psi=1.0, source="image", c0=3.0, api_name="/generate"))
    assert not np.array_equal(edited, rebuilt)
    with pytest.raises(Exception, match="upload an image"):
        client.predict(image_path=None, api_name="/invert")


def test_explore_stays_responsive_while_a_finetune_runs(client):
    import time

    from gradio_client import Client

    other = Client(client.src, verbose=False)  # another user
    job = client.submit(data_source="bundled set", bundled="faces", steps=150, api_name="/finetune")
    t0 = time.time()
    while job.status().code.name not in ("PROCESSING", "ITERATING") and time.time() - t0 < 30:
        time.sleep(0.1)
    t = time.time()
    img = load(other.predict(seed=8, psi=0.7, api_name="/generate"))
    assert img.shape == (16, 16, 3)
    assert time.time() - t < 5.0
    assert not job.done()  # the fine-tune was still running while we explored
    job.cancel()
    other.close()


@pytest.mark.parametrize("endpoint", ["/interpolate", "/finetune", "/invert"])
def test_handler_defaults_are_the_pages_defaults(client, endpoint):
    """The API takes its defaults from the page's components; the handler's own defaults (what a reader of app.py
    sees, and what a direct call gets) must say the same."""
    import inspect

    from app import Handlers

    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"][endpoint]
    page = {p["parameter_name"]: p["parameter_default"] for p in api["parameters"] if p["parameter_has_default"]}
    declared = inspect.signature(getattr(Handlers, endpoint[1:])).parameters
    assert page and set(page) <= set(declared)
    assert {n: declared[n].default for n in page} == page
    if endpoint == "/interpolate":  # the values that had drifted apart
        assert page["seeds"] == "1,2,3,4" and page["space"] == "w"
