"""Category and style control of a conditional model: the /generate and /interpolate APIs, share links, the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.explore import ExploreState
from tests.conftest import tiny_checkpoint, tiny_conditional_checkpoint

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(conditional_app_url):
    from gradio_client import Client

    c = Client(conditional_app_url, verbose=False)
    yield c
    c.close()


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_takes_category_and_style(client):
    anyone = load(client.predict(seed=3, psi=0.7, api_name="/generate"))
    fruit = load(client.predict(seed=3, psi=0.7, category="food-fruit", api_name="/generate"))
    flag = load(client.predict(seed=3, psi=0.7, category="flag", api_name="/generate"))
    assert not np.array_equal(fruit, flag)
    assert np.array_equal(fruit, load(client.predict(seed=3, psi=0.7, category="food-fruit", api_name="/generate")))
    twemoji = load(client.predict(seed=3, psi=0.7, category="flag", style="twemoji", api_name="/generate"))
    noto = load(client.predict(seed=3, psi=0.7, category="flag", style="noto", api_name="/generate"))
    assert not np.array_equal(twemoji, noto)
    # a group draws one of its own subgroups: the image is one of the two food kinds' for this seed (psi 0.7)
    group = load(client.predict(seed=3, psi=0.7, category="Food & Drink", style="noto", api_name="/generate"))
    sweet = load(client.predict(seed=3, psi=0.7, category="food-sweet", style="noto", api_name="/generate"))
    fruit_noto = load(client.predict(seed=3, psi=0.7, category="food-fruit", style="noto", api_name="/generate"))
    assert np.array_equal(group, sweet) or np.array_equal(group, fruit_noto)
    assert anyone.shape == (16, 16, 3)


def test_generate_rejects_unknown_category_and_style(client):
    with pytest.raises(Exception, match="unknown category 'pizza'"):
        client.predict(seed=1, category="pizza", api_name="/generate")
    with pytest.raises(Exception, match="unknown style 'pastel'"):
        client.predict(seed=1, style="pastel", api_name="/generate")
    assert load(client.predict(seed=1, api_name="/generate")).shape == (16, 16, 3)  # still serving


def test_interpolate_takes_category(client):
    strip_any, gif_any, _ = client.predict(seeds="1,2", frames_per_segment=3, loop=False, api_name="/interpolate")
    strip_flag, gif_flag, _ = client.predict(seeds="1,2", frames_per_segment=3, loop=False, category="flag",
                                             api_name="/interpolate")
    assert Image.open(gif_flag).n_frames == 4
    assert not np.array_equal(load(strip_any), load(strip_flag))
    with pytest.raises(Exception, match="unknown category"):
        client.predict(seeds="1,2", category="pizza", api_name="/interpolate")


def test_share_link_carries_labels_and_old_links_still_open():
    st = ExploreState(seed=4, category="Food & Drink", style="twemoji")
    q = st.to_query()
    assert "cat=Food%20%26%20Drink" in q and "style=twemoji" in q
    params = dict(p.split("=", 1) for p in q.split("&"))
    back = ExploreState.from_query(params)
    assert (back.category, back.style, back.seed) == ("Food & Drink", "twemoji", 4)
    old = ExploreState.from_query({"seed": "9", "psi": "0.5"})  # a link from before labels existed
    assert (old.category, old.style) == ("any", "any")
    assert "cat=" not in ExploreState(seed=9).to_query()  # links of unconditional models are unchanged
    assert ExploreState.from_json(st.to_json()).category == "Food & Drink"


def test_cli_generate_by_category(tmp_path):
    ckpt = tiny_conditional_checkpoint(tmp_path / "cond.safetensors")
    outs = {}
    for cat in ("food-fruit", "flag"):
        out = tmp_path / f"{cat}.png"
        r = subprocess.run([sys.executable, "-m", "gan", "generate", "--checkpoint", str(ckpt), "--seeds", "0-3",
                            "--category", cat, "--style", "noto", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs[cat] = load(out)
    assert not np.array_equal(outs["food-fruit"], outs["flag"])
    r = subprocess.run([sys.executable, "-m", "gan", "generate", "--checkpoint", str(ckpt), "--seeds", "0",
                        "--category", "pizza", "--out", str(tmp_path / "x.png")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "unknown category 'pizza'" in r.stderr
    plain = tiny_checkpoint(tmp_path / "plain.safetensors")
    r = subprocess.run([sys.executable, "-m", "gan", "generate", "--checkpoint", str(plain), "--seeds", "0",
                        "--category", "flag", "--out", str(tmp_path / "y.png")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "unconditional" in r.stderr


CATEGORY_MODEL = ROOT / "checkpoints" / "emoji64_categories.safetensors"


@pytest.mark.skipif(not CATEGORY_MODEL.exists(), reason="no shipped category model")
def test_shipped_category_model_is_in_the_picker_and_draws_what_it_is_asked_for():
    from gan.checkpoint import load_checkpoint
    from gan.labels import LabelSpace
    from gan.latent import render, seeds_to_ws
    from gan.paths import CHECKPOINT_DIR
    from studio.models import catalogue

    entries = catalogue([CHECKPOINT_DIR])
    assert [e.path.name for e in entries][:2] == ["emoji64.safetensors", "emoji64_categories.safetensors"]  # default first
    assert entries[1].label().startswith("emoji64 by category (experimental) (64 px")
    ck = load_checkpoint(CATEGORY_MODEL)
    space = LabelSpace.of(ck.model_cfg, ck.meta)
    assert ck.model_cfg.labels == ("subgroup", "style")
    assert space.conditional and space.styles() == ["noto", "twemoji", "fluent-flat"]
    assert {"People & Body", "Food & Drink", "Flags"} <= set(space.groups())
    assert "person-role" in {v for _, v in space.category_choices()}
    assert ("People & Body (16 kinds, 6081 images)", "People & Body") in space.category_choices()  # counts beside names
    assert float(ck.G_ema.mapping_net.label_lambda) == 1.0  # fully conditional, not mid-transition
    seeds = [0, 1, 2, 3]
    imgs = {cat: render(ck.G_ema, seeds_to_ws(ck.G_ema, seeds, psi=0.7, c=space.c_for_seeds(seeds, cat)), noise_mode="const")
            for cat in ("People & Body", "Flags")}  # (4, 64, 64, 3) uint8 each
    assert imgs["Flags"].shape == (4, 64, 64, 3)
    assert np.abs(imgs["Flags"].astype(int) - imgs["People & Body"].astype(int)).mean() > 20  # the label changes the picture


def test_app_on_a_conditional_model_lays_out_only_the_labelled_pickers(tmp_path):
    import gradio as gr

    from app import create_app

    demo = create_app(tiny_conditional_checkpoint(tmp_path / "cond.safetensors"))
    dropdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)]
    assert all(d.label for d in dropdowns), [d.elem_id for d in dropdowns if not d.label]  # no stray "Dropdown" boxes
    assert {"category", "style", "interp-category", "interp-style"} <= {d.elem_id for d in dropdowns if d.visible}
