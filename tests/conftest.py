"""Shared fixtures: a tiny model config and a tiny synthetic dataset made on the fly (no downloads)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.config import ModelConfig, TrainConfig
from gan.dataset import ImageDataset

torch.set_num_threads(1)  # tiny models: one thread is as fast and never oversubscribes


def tiny_model_cfg(resolution: int = 16) -> ModelConfig:
    return ModelConfig(resolution=resolution, z_dim=32, w_dim=32, channel_base=32 * resolution // 4, channel_max=32,
                       d_channel_base=32 * resolution // 4, d_channel_max=32)


def tiny_train_cfg(**kw) -> TrainConfig:
    base = dict(batch=8, steps=6, sample_every=0, checkpoint_every=0, log_every=1, grid_seeds=(0, 1, 2, 3),
                augment="ada", aug_p=0.0)
    base.update(kw)
    return TrainConfig(**base)


def make_discs(n: int = 64, size: int = 16, seed: int = 0) -> ImageDataset:
    """Coloured discs on white: a trivially learnable 'emoji-like' set."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs = np.full((n, size, size, 3), 255, np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
        r = rng.uniform(size * 0.25, size * 0.4)
        color = rng.randint(0, 200, 3)
        imgs[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = color
    return ImageDataset(imgs, name="discs", license="CC0 (synthetic)")


def tiny_checkpoint(path, resolution: int = 16, seed: int = 0):
    """A tiny G (with a settled w_avg) + D checkpoint at `path`, for app-level tests. Returns the path."""
    from gan.checkpoint import save_checkpoint
    from gan.networks import Discriminator, Generator

    cfg = tiny_model_cfg(resolution)
    torch.manual_seed(seed)
    G = Generator(cfg)
    G.mapping(torch.randn(256, cfg.z_dim), update_w_avg=True)
    return save_checkpoint(path, cfg, G, None, Discriminator(cfg), meta={"dataset": "random", "nimg": 0})


@pytest.fixture
def model_cfg() -> ModelConfig:
    return tiny_model_cfg()


@pytest.fixture
def discs() -> ImageDataset:
    return make_discs()


def _served_app(tmp, make_checkpoint):
    """The real app (create_app) on the checkpoint make_checkpoint(tmp) writes, served in-process on a free port;
    yields its URL."""
    pytest.importorskip("gradio_client")
    ckpt = make_checkpoint(tmp)
    mp = pytest.MonkeyPatch()
    mp.setenv("GAN_CACHE_DIR", str(tmp / "cache"))
    mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from app import create_app

    demo = create_app(ckpt)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                            max_file_size="50mb")
    yield url
    demo.close()
    mp.undo()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The real app on a tiny checkpoint, for API tests."""
    yield from _served_app(tmp_path_factory.mktemp("app"), lambda tmp: tiny_checkpoint(tmp / "tiny.safetensors"))


@pytest.fixture(scope="module")
def api_client(app_url):
    """A gradio_client session on the in-process app (one per test module: its own session hash)."""
    from gradio_client import Client

    c = Client(app_url, verbose=False)
    yield c
    c.close()


TINY_SUBGROUPS = ("face-smiling", "food-fruit", "food-sweet", "flag")
TINY_GROUP_OF = {"face-smiling": "Smileys & Emotion", "food-fruit": "Food & Drink", "food-sweet": "Food & Drink",
                 "flag": "Flags"}
TINY_STYLES = ("noto", "twemoji")


def tiny_conditional_checkpoint(path, resolution: int = 16, seed: int = 0, name: str = "Tiny conditional"):
    """A tiny subgroup x style conditional checkpoint whose labels visibly matter (lambda 1, random label
    projections, class centres estimated), with the card's label_info. Returns the path."""
    import dataclasses

    from gan.checkpoint import save_checkpoint
    from gan.networks import Discriminator, Generator, estimate_class_w_avg

    cfg = dataclasses.replace(tiny_model_cfg(resolution), labels=("subgroup", "style"), label_names=(TINY_SUBGROUPS, TINY_STYLES))
    torch.manual_seed(seed)
    G = Generator(cfg)
    G.mapping(torch.randn(256, cfg.z_dim), update_w_avg=True)
    with torch.no_grad():
        G.mapping_net.label_proj.weight.normal_(0, 2)  # equalised lr: the label term is then as large as the z term
    G.mapping_net.label_lambda.fill_(1.0)
    G.mapping_net.w_avg_c.copy_(estimate_class_w_avg(G, n=64))
    meta = {"dataset": "random", "nimg": 0, "name": name,
            "label_info": {"group_of": TINY_GROUP_OF, "counts": {"subgroup": dict(zip(TINY_SUBGROUPS, (40, 7, 5, 9))),
                                                                  "style": {"noto": 31, "twemoji": 30}}}}
    return save_checkpoint(path, cfg, G, None, Discriminator(cfg), meta=meta)


@pytest.fixture(scope="session")
def conditional_app_url(tmp_path_factory):
    """The real app on a tiny conditional checkpoint, for API tests of the category and style."""
    yield from _served_app(tmp_path_factory.mktemp("capp"),
                           lambda tmp: tiny_conditional_checkpoint(tmp / "cond.safetensors"))


# Browser tests (Debian's Chromium through Playwright): one browser per module, a fresh context per test. The modules
# that use them skip when Chromium or Playwright is missing.
@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    from tools.browser import launch_chromium

    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()
