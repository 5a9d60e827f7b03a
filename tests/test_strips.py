"""Scrub strips and the batched render queue: a strip's frames are the exact renders of their values, keys change
with everything but the slider's own value, concurrent renders share batches without changing a pixel."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from studio import explore
from studio.explore import ExploreState, Renderer
from studio.models import load_model
from studio.render_queue import STRIP_PIECE, RenderQueue
from studio.strips import StripCache, StripOff, grid_values, render_strip, strip_key
from tests.conftest import tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "emoji64.safetensors"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    if not SHIPPED.exists():
        pytest.skip("no shipped checkpoint")
    mp = pytest.MonkeyPatch()
    mp.setenv("GAN_CACHE_DIR", str(tmp_path_factory.mktemp("dirs")))
    yield load_model(SHIPPED, "shipped")
    mp.undo()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    mp = pytest.MonkeyPatch()
    mp.setenv("GAN_CACHE_DIR", str(tmp / "dirs"))
    yield load_model(tiny_checkpoint(tmp / "tiny.safetensors"), "tiny")
    mp.undo()


@pytest.mark.parametrize("field", ["c0", "c3", "psi", "mix_end", "layer_start"])
def test_strip_frames_are_the_exact_renders_of_their_values(shipped, field):
    """Frame i of a strip equals the release render (Renderer.render, the /generate path) of value i, pixel for
    pixel, on the shipped model: the strip is one batch of up to 61 rows, the release render a batch of one."""
    st = ExploreState(seed=3, psi=0.8, coeffs=[0.5, 0, 0, -1.0, 0, 0], layer_start=1, layer_end=9,
                      mix_seed=7, mix_start=4, mix_end=6)
    queue = RenderQueue()
    strip = render_strip(shipped, st, None, field, queue)
    frames = strip.frames()
    values = grid_values(field, shipped)
    assert len(frames) == strip.count == len(values) and frames.shape[1:] == (64, 64, 3)
    renderer = Renderer(queue=queue)
    picks = sorted({0, 1, len(values) // 3, len(values) // 2, len(values) - 1})
    for i in picks:
        exact = renderer.render(shipped, explore_state_with(st, field, values[i]))
        assert np.array_equal(frames[i], exact), f"{field}={values[i]}: strip frame differs from the exact render"
    assert len({frames[i].tobytes() for i in picks}) > 1  # the slider does change the picture


def explore_state_with(st: ExploreState, field: str, value: float) -> ExploreState:
    """A fresh state as the page would send it on release (the API's flat values)."""
    values = dict(zip(explore.API_FIELDS, st.values()))
    values[field] = value
    return ExploreState.from_values([values[n] for n in explore.API_FIELDS])


def test_strip_values_follow_the_page_sliders(shipped):
    c = grid_values("c0", shipped)
    assert len(c) == 61 and c[0] == -3.0 and c[33] == 0.3 and c[30] == 0.0 and c[-1] == 3.0
    psi = grid_values("psi", shipped)
    assert len(psi) == 31 and psi[14] == 0.7 and psi[-1] == 1.5
    assert grid_values("mix_start", shipped) == list(range(shipped.num_ws + 1))
    with pytest.raises(ValueError, match="no strip for 'seed'"):
        grid_values("seed", shipped)


def test_strip_key_changes_with_everything_but_the_slider_itself(tiny):
    st = ExploreState(seed=1, layer_end=tiny.num_ws)
    key = strip_key(tiny, st, None, "c0")
    moved = ExploreState(seed=1, layer_end=tiny.num_ws, coeffs=[2.5, 0, 0, 0, 0, 0])
    assert strip_key(tiny, moved, None, "c0") == key  # same strip while c0 is dragged
    assert strip_key(tiny, moved, None, "c1") != strip_key(tiny, st, None, "c1")  # c0 is part of c1's strip
    for other in (ExploreState(seed=2, layer_end=tiny.num_ws), ExploreState(seed=1, psi=0.5, layer_end=tiny.num_ws),
                  ExploreState(seed=1, layer_end=tiny.num_ws, method="ganspace"),
                  ExploreState(seed=1, layer_end=tiny.num_ws, noise_mode="none")):
        assert strip_key(tiny, other, None, "c0") != key
    assert strip_key(tiny, st, None, "c1") != key  # another slider, another strip


def test_strip_cache_serves_the_same_strip_and_renders_a_new_one_per_state(tiny):
    queue = RenderQueue()
    cache = StripCache(queue)
    a = cache.get(tiny, ExploreState(seed=1, layer_end=tiny.num_ws), None, "c0")
    rows = queue.rows
    b = cache.get(tiny, ExploreState(seed=1, layer_end=tiny.num_ws, coeffs=[1.0]), None, "c0")
    assert b is a and queue.rows == rows == 61
    c = cache.get(tiny, ExploreState(seed=2, layer_end=tiny.num_ws), None, "c0")
    assert c.key != a.key and queue.rows == 122 and not np.array_equal(a.frames(), c.frames())


def test_no_strip_for_random_noise_large_models_or_a_missing_inverted_image(tiny, tmp_path):
    queue = RenderQueue()
    with pytest.raises(StripOff, match="random"):
        render_strip(tiny, ExploreState(noise_mode="random", layer_end=tiny.num_ws), None, "c0", queue)
    with pytest.raises(StripOff, match="no inverted image"):
        render_strip(tiny, ExploreState(source="image", layer_end=tiny.num_ws), None, "c0", queue)
    big = load_model(tiny_checkpoint(tmp_path / "big.safetensors", resolution=256), "big")
    with pytest.raises(StripOff, match="256 px: scrub previews are off above 128 px"):
        render_strip(big, ExploreState(layer_end=big.num_ws), None, "c0", queue)
    with pytest.raises(StripOff, match="seed"):
        StripCache(queue).get(tiny, ExploreState(seed=-1), None, "c0")


def test_render_queue_batches_concurrent_users_without_changing_pixels(shipped):
    """16 users render at once: fewer synthesis calls than renders, and every image equals the same state rendered
    alone."""
    queue = RenderQueue()
    states = [ExploreState(seed=100 + i, layer_end=shipped.num_ws) for i in range(16)]
    alone = [explore.render_state(shipped, st) for st in states]
    out: list = [None] * len(states)
    start = threading.Barrier(len(states))

    def user(i: int) -> None:
        start.wait()
        out[i] = explore.render_state(shipped, states[i], queue=queue)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(states))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(alone, out))
    assert queue.rows == 16 and queue.batches < 16


def test_exact_renders_go_before_a_strip_and_share_its_batches(shipped):
    """The worker's choice of rows (checked without its thread): a render asked while a strip waits goes first and
    the strip's rows share its batch, STRIP_PIECE at a time. Pixels stay exact."""
    from studio.render_queue import EXACT, STRIP, _Job

    queue = RenderQueue()
    st = ExploreState(seed=21, layer_end=shipped.num_ws)
    strip_ws = torch.cat([explore.state_ws(shipped, ExploreState(seed=21, layer_end=shipped.num_ws, coeffs=[c]))
                          for c in np.linspace(-3, 3, 40)])  # (40, num_ws, w_dim)
    strip = _Job(shipped, strip_ws, "const", STRIP)
    exact = _Job(shipped, explore.state_ws(shipped, st), "const", EXACT)
    queue._pending = [strip, exact]
    first = queue._take()
    assert STRIP_PIECE == 8
    assert [(j.priority, a, n) for j, a, n in first] == [(EXACT, 0, 1), (STRIP, 0, 8)]
    for start in range(8, 40, 8):
        assert [(j.priority, a, n) for j, a, n in queue._take()] == [(STRIP, start, 8)]
    assert not queue._pending
    # the same rows through the real worker: a render and a strip asked at once, each exact
    out: list = []
    t = threading.Thread(target=lambda: out.append(queue.render(shipped, strip_ws, "const", priority=STRIP)))
    t.start()
    img = explore.render_state(shipped, st, queue=queue)
    t.join()
    assert np.array_equal(img, explore.render_state(shipped, st))
    assert np.array_equal(out[0][7], explore.render_state(
        shipped, ExploreState(seed=21, layer_end=shipped.num_ws, coeffs=[float(np.linspace(-3, 3, 40)[7])])))


def test_render_queue_hands_errors_to_the_caller_and_keeps_working(tiny):
    queue = RenderQueue()
    ws = explore.state_ws(tiny, ExploreState(layer_end=tiny.num_ws))
    with pytest.raises(ValueError, match="expected ws"):
        queue.render(tiny, ws[0], "const")
    with pytest.raises(ValueError, match="noise_mode"):
        queue.render(tiny, ws, "loud")
    assert queue.render(tiny, ws, "const").shape == (1, 16, 16, 3)


def test_a_row_is_independent_of_its_batch(shipped):
    """The reason for the batch-invariant synthesis, checked where it matters: a state rendered alone and inside a
    batch of 40 other states gives the same bits."""
    ws = torch.cat([explore.state_ws(shipped, ExploreState(seed=s, layer_end=shipped.num_ws)) for s in range(41)])
    queue = RenderQueue()
    together = queue.render(shipped, ws, "const")
    for i in (0, 17, 40):
        assert np.array_equal(queue.render(shipped, ws[i : i + 1], "const")[0], together[i])


def test_the_strip_handler_answers_the_page(tiny, monkeypatch):
    """Handlers.strip as STRIP_JS calls it: a strip with its grid, `same` when the page holds it, `off` with the
    reason, `deferred` for a prefetch while renders wait, a clear error for a slider without strips."""
    import json

    import gradio as gr

    from app import Handlers
    from studio.models import ModelCache
    from studio.session import Sessions

    h = Handlers(Sessions(tiny), ModelCache(), torch.device("cpu"))
    st = ExploreState(seed=5, layer_end=tiny.num_ws)
    values = dict(zip(explore.API_FIELDS, st.values()))
    ask = lambda **d: json.loads(h.strip(**values, evt=gr.EventData(None, {"nonce": 7, **d})))  # noqa: E731
    first = ask(field="c2")
    assert first["nonce"] == 7 and first["count"] == 61 and first["url"].startswith("data:image/png;base64,")
    assert ask(field="c2", have=first["key"]) == {**{k: v for k, v in first.items() if k != "url"}, "same": True}
    psi = ask(field="psi")
    assert psi["count"] == 31 and psi["key"] != first["key"]
    values["noise_mode"] = "random"
    assert "random" in ask(field="c2")["off"]
    values["noise_mode"] = "const"
    monkeypatch.setattr(h.renderer.queue, "busy", lambda: True)
    assert ask(field="c2", prefetch=True)["deferred"] is True
    with pytest.raises(gr.Error, match="no scrub strip for 'seed'"):
        ask(field="seed")


def test_strips_and_the_render_queue_import_no_gradio():
    import subprocess
    import sys

    code = ("import studio.strips, studio.render_queue, sys; "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('gradio', 'app')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_strip_of_an_inverted_image_is_exact_and_keyed_by_that_image(tiny):
    """source 'image': the strip edits the session's inverted image; its frames are the exact renders, and another
    inversion (even of the same ws) is another strip."""
    ws = explore.state_ws(tiny, ExploreState(seed=9, psi=1.0, layer_end=tiny.num_ws))  # (1, num_ws, w_dim)
    proj, proj2 = explore.Projection.of(ws, tiny), explore.Projection.of(ws, tiny)
    st = ExploreState(source="image", psi=1.0, layer_end=tiny.num_ws)
    queue = RenderQueue()
    strip = render_strip(tiny, st, proj, "c1", queue)
    renderer = Renderer(queue=queue)
    for i, v in ((0, -3.0), (45, 1.5)):
        assert np.array_equal(strip.frames()[i], renderer.render(tiny, explore_state_with(st, "c1", v), proj))
    assert strip_key(tiny, st, proj2, "c1") != strip.key
    assert strip_key(tiny, ExploreState(seed=9, psi=1.0, layer_end=tiny.num_ws), proj, "c1") != strip.key


def test_small_models_render_on_one_thread_and_the_setting_comes_back(shipped):
    """The render queue's thread count: one torch thread for the shipped model (its many small ops lose more to a
    second OpenMP thread than they gain), the process's own count for a config-f sized model, and the process's
    count restored after every call."""
    from gan.config import ModelConfig
    from gan.networks import Generator
    from studio.models import LoadedModel
    from studio.render_queue import cpu_threads, synthesis_macs

    assert synthesis_macs(shipped) < 10**9 and cpu_threads(shipped) == 1
    big_cfg = ModelConfig(resolution=128, channel_base=16384, channel_max=512, z_dim=512, w_dim=512)
    big = LoadedModel("big", Generator(big_cfg), shipped.checkpoint, "big")
    assert synthesis_macs(big) > 10**10 and cpu_threads(big) is None
    before = torch.get_num_threads()
    queue = RenderQueue()
    seen: list[int] = []
    real = torch.set_num_threads
    try:
        torch.set_num_threads = lambda n: (seen.append(n), real(n))[1]
        queue.render(shipped, explore.state_ws(shipped, ExploreState(seed=3, layer_end=shipped.num_ws)), "const")
    finally:
        torch.set_num_threads = real
    assert seen == [1, before] and torch.get_num_threads() == before
