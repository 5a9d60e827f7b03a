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
