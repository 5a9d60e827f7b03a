"""The app's services without the web layer: explore state, sessions and jobs, animations, the fine-tune stream."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from gan.checkpoint import save_checkpoint
from gan.images import to_uint8
from gan.networks import Generator
from studio import explore, media
from studio.explore import ExploreState
from studio.finetune import KEEP, finetune_config, plan_finetune, run_finetune, stream_finetune
from studio.models import ModelCache, catalogue, load_model
from studio.session import JobRefused, Sessions
from tests.conftest import make_discs, tiny_checkpoint


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("studio") / "base.safetensors"), "base")


def test_explore_state_round_trips_through_query_json_and_values():
    st = ExploreState(seed=9, psi=0.55, noise_mode="none", method="ganspace", layer_start=2, layer_end=6,
                      coeffs=[1.5, 0, -2, 0, 0, 0.5], mix_seed=4, mix_start=3, mix_end=8)
    q = dict(kv.split("=") for kv in st.to_query().split("&"))
    back = ExploreState.from_query(q).validate(10)
    assert back == st.validate(10)
    assert ExploreState.from_json(st.to_json()) == st
    assert ExploreState.from_values(st.values()) == st
    assert explore.API_FIELDS[:3] == ("seed", "psi", "noise_mode") and "c5" in explore.API_FIELDS
    with pytest.raises(ValueError, match="bad link parameter"):
        ExploreState.from_query({"seed": "abc"})
    with pytest.raises(ValueError, match="explore-state JSON"):
        ExploreState.from_json("[1, 2]")
    with pytest.raises(ValueError, match="explore value"):
        ExploreState.from_values(["x"] * len(explore.API_FIELDS))


@pytest.mark.parametrize("bad", [dict(psi=9.0), dict(noise_mode="x"), dict(method="pca"), dict(seed=-1),
                                 dict(coeffs=[float("nan")]), dict(coeffs=[0.0] * 9), dict(source="url")])
def test_explore_state_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ExploreState(**bad).validate(10)


def test_layer_ranges_are_clamped_and_ordered():
    st = ExploreState(layer_start=8, layer_end=99, mix_start=5, mix_end=1).validate(6)
    assert (st.layer_start, st.layer_end) == (6, 6) and (st.mix_start, st.mix_end) == (1, 5)


def test_render_is_memoised_and_sessions_are_isolated(base, tmp_path):
    renderer = explore.Renderer()
    st = ExploreState(seed=3, coeffs=[1.0])
    a = renderer.render(base, st)
    assert a.shape == (16, 16, 3) and renderer.render(base, st) is a  # memo hit
    noisy = ExploreState(seed=3, noise_mode="random")
    assert renderer.render(base, noisy) is not renderer.render(base, noisy)

    sessions = Sessions(base)
    other = save_checkpoint(tmp_path / "other.safetensors", base.checkpoint.model_cfg, Generator(base.checkpoint.model_cfg))
    sessions.use_model("alice", load_model(other, "alice's"))
    assert sessions.model("alice").label == "alice's" and sessions.model("bob") is base
    assert not np.array_equal(renderer.render(sessions.model("alice"), st), a)
    sessions.use_model("alice", None)
    assert sessions.model("alice") is base
    sessions.use_model("carol", load_model(other, "c"))
    sessions.ttl_s = -1
    assert sessions.prune() >= 1 and sessions.model("carol") is base


def test_projection_source_needs_an_inversion(base):
    renderer, sessions = explore.Renderer(), Sessions(base)
    with pytest.raises(ValueError, match="no inverted image"):
        renderer.render(base, ExploreState(source="image"))
    ws = base.G.mapping(torch.randn(1, base.G.z_dim))
    sessions.set_projection("dave", explore.Projection.of(ws, base))
    img = renderer.render(base, ExploreState(source="image", psi=1.0), sessions.projection("dave"))
    direct = to_uint8(base.G.synthesis(ws))[0]
    assert np.abs(img.astype(int) - direct.astype(int)).max() <= 1
    sessions.forget("dave")
    assert sessions.projection("dave") is None


def test_one_job_per_session_and_a_fair_line(base):
    sessions = Sessions(base, job_slots=1, max_waiting=2)
    a = sessions.start_job("alice", "fine-tune")
    with pytest.raises(JobRefused, match="already have a fine-tune job"):
        sessions.start_job("alice", "inversion")
    assert list(a.wait()) == []  # the first job runs at once
    b = sessions.start_job("bob", "fine-tune")
    waiting = b.wait(poll_s=0.01)
    assert next(waiting) == 1  # bob waits, first in line
    c = sessions.start_job("carol", "inversion")
    with pytest.raises(JobRefused, match="busy"):
        sessions.start_job("dave", "fine-tune")  # the line is full
    assert a.running and next(c.wait(poll_s=0.01)) == 2  # one running, carol second in line behind bob
    a.close()
    assert list(waiting) == [] and b.running  # alice's slot went to bob
    sessions.forget("bob")  # bob's tab closed: his job is asked to stop
    assert b.stop.is_set()
    b.close()
    assert sessions.stop_job("carol", "inversion") and not sessions.stop_job("carol", "fine-tune")


def test_session_files_are_removed_with_the_session(base):
    sessions = Sessions(base)
    a = sessions.workdir("erin", "interp")
    (a / "x.gif").write_bytes(b"GIF89a")
    job = sessions.start_job("erin", "fine-tune")
    b = sessions.workdir("erin", "finetune")
    assert a.parent == b.parent and a != b
    sessions.forget("erin")  # tab closed while the job runs: the job is stopped, its folder kept until it ends
    assert job.stop.is_set() and b.exists()
    job.close()
    assert not a.exists() and not b.exists()
    c = sessions.workdir("frank", "interp")
    sessions.ttl_s = -1
    sessions.prune()  # idle too long: forgotten, files gone
    assert not c.exists()


def test_catalogue_and_model_cache(base, tmp_path):
    cfg = base.checkpoint.model_cfg
    save_checkpoint(tmp_path / "a.safetensors", cfg, Generator(cfg), meta={"name": "Alpha", "nimg": 5000})
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    entries = catalogue([tmp_path, tmp_path])
    assert [e.name for e in entries] == ["Alpha"] and "16 px" in entries[0].label() and "5k images" in entries[0].label()
    cache = ModelCache(size=1)
    m = cache.get(entries[0].path, "alpha")
    assert cache.get(entries[0].path, "again") is m  # loaded once, shared


def test_animation_files_and_limits(base, tmp_path, monkeypatch):
    anim = media.make_animation(base, [1, 2, 3], 3, "slerp", "w", True, 0.7, "const", 10, tmp_path / "a")
    assert anim.frames == 9 and Image.open(anim.gif).n_frames == 9
    assert anim.video.exists() and anim.video.suffix in (".mp4", ".webp")
    monkeypatch.setattr(media.shutil, "which", lambda name: None)  # no ffmpeg: animated WebP instead
    anim = media.make_animation(base, [1, 2], 4, "lerp", "z", False, 0.7, "const", 10, tmp_path / "b")
    assert anim.video.suffix == ".webp" and Image.open(anim.video).n_frames == 5
    with pytest.raises(ValueError, match="keyframe"):
        media.make_animation(base, list(range(20)), 2, "lerp", "z", False, 0.7, "const", 10, tmp_path)
    with pytest.raises(ValueError, match="at most"):
        media.make_animation(base, [1, 2], 1000, "lerp", "z", False, 0.7, "const", 10, tmp_path)
    with pytest.raises(ValueError, match="psi"):
        media.make_animation(base, [1, 2], 4, "lerp", "z", False, 5.0, "const", 10, tmp_path)


def test_animation_through_the_render_queue_is_the_same_frames(base, tmp_path):
    """The app renders interpolation frames through its render queue (one thread, in pieces between other users'
    pictures): the same frames as rendered in the caller's thread."""
    from studio.render_queue import RenderQueue

    queue = RenderQueue()
    a = media.make_animation(base, [4, 5], 9, "slerp", "z", False, 0.7, "const", 10, tmp_path / "a")
    b = media.make_animation(base, [4, 5], 9, "slerp", "z", False, 0.7, "const", 10, tmp_path / "b", queue=queue)
    assert a.frames == b.frames == 10 and np.array_equal(a.strip, b.strip)
    assert queue.batches >= 2  # 10 frames go in pieces
    assert np.array_equal(np.asarray(Image.open(a.gif).convert("RGB")), np.asarray(Image.open(b.gif).convert("RGB")))


def test_finetune_stream_stop_and_before_after(base, tmp_path):
    ds = make_discs(16, size=16)
    cfg = finetune_config(len(ds), steps=50, lr_g=1e-3, lr_d=1e-3, batch=4)
    stop = threading.Event()
    updates = []
    for up in run_finetune(base, ds, cfg, stop, tmp_path / "ft"):
        updates.append(up)
        if len(updates) == 3:
            stop.set()
    last = updates[-1]
    assert last.done and "stopped at step 3" in last.status and last.checkpoint.exists()
    assert [h["step"] for h in last.history] == [1, 2, 3] and last.grid is not None
    # the tuned model comes back in memory, with the same weights as the file written for download
    tuned = last.model
    reread = load_model(last.checkpoint, "reread")
    z = torch.randn(2, base.G.z_dim)
    assert torch.equal(tuned.G(z), reread.G(z)) and tuned.sha256 == reread.sha256 and tuned.checkpoint.D is not None
    ba = media.before_after(base, tuned, seeds=(0, 1, 2))
    assert ba.shape[1] > ba.shape[0] and ba.dtype == np.uint8
    frame = media.curves_frame(last.history)
    assert list(frame.columns) == ["step", "value", "series"] and set(frame.series) == {"loss_G", "loss_D"}
    assert len(frame) == 2 * 3
    for bad in (dict(steps=0), dict(lr_g=1.0), dict(augment="max"), dict(batch=1000)):
        with pytest.raises(ValueError, match="must be"):
            finetune_config(10, **bad)


def test_finetune_runs_for_its_time_budget(base, tmp_path):
    ds = make_discs(16, size=16)
    cfg = finetune_config(len(ds), steps=2000, batch=4)
    t0 = __import__("time").perf_counter()
    updates = list(run_finetune(base, ds, cfg, threading.Event(), tmp_path / "ft", seconds=2))
    took = __import__("time").perf_counter() - t0
    last = updates[-1]
    assert last.done and last.status.startswith("finished at step") and 2 <= last.history[-1]["seconds"] < 6
    assert took < 60 and last.model is not None
    assert "s of 2" in updates[0].status  # the status counts the time budget
    with pytest.raises(ValueError, match="seconds"):
        next(run_finetune(base, ds, cfg, threading.Event(), tmp_path / "x", seconds=0))


def test_finetune_request_is_checked_then_streamed_as_messages(base, tmp_path):
    cpu = torch.device("cpu")
    opts = dict(steps=3, lr=1e-3, augment="none", freeze_mapping=True, freeze_d_blocks=1, mirror=True, seconds=30,
                keep_variety=True)
    for source, bundled, uploads, why in [("web", None, [], "data_source must be"),
                                          ("bundled set", "hearts", ["a.png"], "chose the bundled set"),
                                          ("upload", None, [], "upload some images"),
                                          ("bundled set", "nope", [], "nope")]:
        with pytest.raises(ValueError, match=why):
            plan_finetune(base, cpu, source, bundled, uploads, **opts)
    with pytest.raises(ValueError, match=r"run length must be within \[1, 3600\] seconds, got 0"):
        plan_finetune(base, cpu, "bundled set", "hearts", [], **{**opts, "seconds": 0})
    plan = plan_finetune(base, cpu, "bundled set", "hearts", [], **opts)
    assert (plan.cfg.steps, plan.cfg.lr_g, plan.cfg.lr_d, plan.cfg.augment, plan.cfg.xflip) == (3, 1e-3, 1e-3, "none", True)
    assert plan.cfg.freeze_g_blocks == 2 and plan.seconds == 30.0 and not plan.warnings  # keep variety: FreezeG

    sessions = Sessions(base)
    job = sessions.start_job("erin", "fine-tune")
    messages = list(stream_finetune(sessions, "erin", job, base, plan, cpu))
    first, steps, last = messages[0], messages[1:-1], messages[-1]
    assert first.status.startswith(f"running on {len(plan.dataset)} images") and first.targets is not KEEP
    assert len(steps) == 3 and all(m.targets is KEEP and m.compare is None and m.curves is not None for m in steps)
    assert steps[0].grid is not KEEP  # the first grid goes out; an unchanged one is not sent again
    assert steps[1].outputs(keep=lambda: "same")[6] == "same" and len(steps[1].outputs(keep=lambda: "same")) == 7
    assert "finished at step 3" in last.status and last.compare is not None and last.checkpoint.endswith(".safetensors")
    assert sessions.tuned("erin") is not None  # the result is the session's tuned model
    sessions.start_job("erin", "inversion").close()  # and the job was closed: the session may start another


def test_curve_tables_stay_small_for_long_runs():
    history = [{"step": i, "loss_G": 1.0, "loss_D": 2.0} for i in range(1, 5001)]
    frame = media.curves_frame(history)
    assert len(frame) <= 2 * 302 and frame.step.max() == 5000
    assert list(media.kid_frame([{"step": 5, "seconds": 1.5, "kid": 0.3}]).columns) == ["seconds", "KID"]
    strip = media.target_strip(np.zeros((20, 16, 16, 3), np.uint8))
    assert strip.shape[1] > strip.shape[0]


def test_a_model_without_discriminator_fine_tunes_with_the_projected_one(tmp_path):
    from gan.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(tiny_checkpoint(tmp_path / "with_d.safetensors"))
    no_d = load_model(save_checkpoint(tmp_path / "no_d.safetensors", ck.model_cfg, ck.G_ema, meta=ck.meta), "no D")
    ds = make_discs(16, size=16)
    with pytest.raises(ValueError, match="projected discriminator"):
        next(run_finetune(no_d, ds, finetune_config(len(ds), steps=2, batch=4), threading.Event(), tmp_path / "a"))
    cfg = finetune_config(len(ds), steps=3, batch=4, d_kind="projected")
    last = list(run_finetune(no_d, ds, cfg, threading.Event(), tmp_path / "b"))[-1]
    assert last.done and last.checkpoint.exists()
    tuned = load_checkpoint(last.checkpoint)
    assert tuned.meta["discriminator"]["kind"] == "projected" and tuned.D is not None  # the card records the kind
    z = torch.randn(2, no_d.G.z_dim)
    assert not torch.equal(last.model.G(z), no_d.G(z))  # G moved
