"""The app's logic without the web layer: explore state, per-session models, animations, fine-tune stream."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from gan import studio
from gan.checkpoint import save_checkpoint
from gan.networks import Generator
from tests.conftest import make_discs, tiny_checkpoint


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("studio") / "base.safetensors")
    return studio.ModelStore(path)


def test_explore_state_round_trips_through_query_and_json():
    st = studio.ExploreState(seed=9, psi=0.55, noise_mode="none", method="ganspace", layer_start=2, layer_end=6,
                             coeffs=[1.5, 0, -2, 0, 0, 0.5], mix_seed=4, mix_start=3, mix_end=8)
    q = dict(kv.split("=") for kv in st.to_query().split("&"))
    back = studio.ExploreState.from_query(q).validate(10)
    assert back == st.validate(10)
    assert studio.ExploreState.from_json(st.to_json()) == st
    with pytest.raises(ValueError, match="bad link parameter"):
        studio.ExploreState.from_query({"seed": "abc"})
    with pytest.raises(ValueError, match="explore-state JSON"):
        studio.ExploreState.from_json("[1, 2]")


@pytest.mark.parametrize("bad", [dict(psi=9.0), dict(noise_mode="x"), dict(method="pca"), dict(seed=-1),
                                 dict(coeffs=[float("nan")]), dict(coeffs=[0.0] * 9), dict(source="url")])
def test_explore_state_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        studio.ExploreState(**bad).validate(10)


def test_layer_ranges_are_clamped_and_ordered():
    st = studio.ExploreState(layer_start=8, layer_end=99, mix_start=5, mix_end=1).validate(6)
    assert (st.layer_start, st.layer_end) == (6, 6) and (st.mix_start, st.mix_end) == (1, 5)


def test_render_is_memoised_and_sessions_are_isolated(store, tmp_path):
    st = studio.ExploreState(seed=3, coeffs=[1.0])
    a = studio.render_explore(store.base, st)
    assert a.shape == (16, 16, 3) and studio.render_explore(store.base, st) is a  # memo hit
    noisy = studio.ExploreState(seed=3, noise_mode="random")
    assert studio.render_explore(store.base, noisy) is not studio.render_explore(store.base, noisy)

    other = save_checkpoint(tmp_path / "other.safetensors", store.base.checkpoint.model_cfg, Generator(store.base.checkpoint.model_cfg))
    store.use_checkpoint("alice", other, "alice's")
    assert store.get("alice").label == "alice's" and store.get("bob") is store.base
    assert not np.array_equal(studio.render_explore(store.get("alice"), st), a)
    store.reset("alice")
    assert store.get("alice") is store.base
    store.use_checkpoint("carol", other, "c")
    store.ttl_s = -1
    assert store.prune() == 1 and store.get("carol") is store.base
    store.ttl_s = 3600


def test_projection_source_needs_an_inversion(store):
    with pytest.raises(ValueError, match="no inverted image"):
        studio.render_explore(store.base, studio.ExploreState(source="image"))
    ws = store.base.G.mapping(torch.randn(1, store.base.G.z_dim))
    proj = store.set_projection("dave", ws, store.base)
    img = studio.render_explore(store.base, studio.ExploreState(source="image", psi=1.0), proj)
    direct = studio.to_uint8(store.base.G.synthesis(ws))[0]
    assert np.abs(img.astype(int) - direct.astype(int)).max() <= 1
    store.forget("dave")
    assert store.get_projection("dave") is None


def test_animation_files_and_limits(store, tmp_path, monkeypatch):
    anim = studio.make_animation(store.base, [1, 2, 3], 3, "slerp", "w", True, 0.7, "const", 10, tmp_path / "a")
    assert anim.frames == 9 and Image.open(anim.gif).n_frames == 9
    assert anim.video.exists() and anim.video.suffix in (".mp4", ".webp")
    monkeypatch.setattr(studio.shutil, "which", lambda name: None)  # no ffmpeg: animated WebP instead
    anim = studio.make_animation(store.base, [1, 2], 4, "lerp", "z", False, 0.7, "const", 10, tmp_path / "b")
    assert anim.video.suffix == ".webp" and Image.open(anim.video).n_frames == 5
    with pytest.raises(ValueError, match="keyframe"):
        studio.make_animation(store.base, list(range(20)), 2, "lerp", "z", False, 0.7, "const", 10, tmp_path)
    with pytest.raises(ValueError, match="at most"):
        studio.make_animation(store.base, [1, 2], 1000, "lerp", "z", False, 0.7, "const", 10, tmp_path)


def test_finetune_stream_stop_and_before_after(store, tmp_path):
    ds = make_discs(16, size=16)
    cfg = studio.finetune_config(50, 1e-3, "ada", True, 1, len(ds), batch=4)
    stop = threading.Event()
    updates = []
    for up in studio.run_finetune(store.base, ds, cfg, stop, tmp_path / "ft"):
        updates.append(up)
        if len(updates) == 3:
            stop.set()
    last = updates[-1]
    assert last.done and "stopped at step 3" in last.status and last.checkpoint.exists()
    assert [h["step"] for h in last.history] == [1, 2, 3]
    tuned = store.load(last.checkpoint, "tuned")
    ba = studio.before_after(store.base, tuned, seeds=(0, 1, 2))
    assert ba.shape[1] > ba.shape[0] and ba.dtype == np.uint8
    fig = studio.loss_figure(last.history)
    assert len(fig.axes) >= 2
    for bad in (dict(steps=0), dict(lr=1.0), dict(augment="max")):
        kw = dict(steps=10, lr=1e-3, augment="ada", freeze_mapping=True, freeze_d_blocks=1, n_images=10) | bad
        with pytest.raises(ValueError):
            studio.finetune_config(**kw)
