import numpy as np
import pytest
import torch

from gan import directions as dirs
from gan.latent import z_from_seed
from gan.networks import Generator
from gan.projector import project, psnr, run_projection
from tests.conftest import tiny_model_cfg


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = Generator(tiny_model_cfg(16)).eval()
    G.mapping(torch.randn(1024, G.z_dim), update_w_avg=True)
    return G


def test_sefa_orthonormal_sorted(G):
    d = dirs.sefa(G, k=8, n_std=2000)
    V = torch.from_numpy(d.vectors)
    assert V.shape == (8, G.w_dim)
    assert torch.allclose(V @ V.t(), torch.eye(8), atol=1e-4)
    assert np.all(np.diff(d.values) <= 1e-6) and d.values[0] > 0
    assert np.all(d.stds > 0) and d.seconds < 5
    part = dirs.sefa(G, k=4, layers=(0, 2), n_std=500)
    assert part.layers == (0, 2) and not np.allclose(np.abs(part.vectors[0]), np.abs(d.vectors[0]))
    with pytest.raises(ValueError):
        dirs.sefa(G, layers=(3, 3))


def test_ganspace_variance_sorted_and_std_matches(G):
    d = dirs.ganspace(G, k=6, n=5000)
    assert np.all(np.diff(d.values) <= 1e-9)
    assert np.allclose(d.stds, np.sqrt(d.values), rtol=1e-5)
    assert 0 < d.explained.sum() <= 1 + 1e-6
    # the std along the first component is the largest of any direction
    w = dirs.sample_w(G, 5000, seed=1)
    proj = (w - w.mean(0)) @ torch.from_numpy(d.vectors).t()
    assert proj.std(0)[0] == pytest.approx(d.stds[0], rel=0.1)


def test_apply_identity_and_layer_range(G):
    d = dirs.sefa(G, k=4, n_std=500)
    ws = G.mapping(torch.randn(3, G.z_dim))  # (3, num_ws, w_dim)
    assert torch.equal(dirs.apply(ws, d, [0, 0, 0, 0]), ws)
    edited = dirs.apply(ws, d, [2.0, 0, -1.0], start=2, end=5)
    assert torch.equal(edited[:, :2], ws[:, :2]) and torch.equal(edited[:, 5:], ws[:, 5:])
    delta = edited[:, 2:5] - ws[:, 2:5]
    expected = 2.0 * d.stds[0] * d.vectors[0] - 1.0 * d.stds[2] * d.vectors[2]
    assert torch.allclose(delta, torch.from_numpy(expected).expand_as(delta), atol=1e-5)
    img0, img1 = G.synthesis(ws), G.synthesis(dirs.apply(ws, d, [3.0]))
    assert not torch.allclose(img0, img1)


def test_save_load_and_cache(G, tmp_path, monkeypatch):
    d = dirs.ganspace(G, k=3, n=1000)
    d.save(tmp_path / "pca")
    back = dirs.Directions.load(tmp_path / "pca", w_dim=G.w_dim)
    assert np.array_equal(back.vectors, d.vectors) and back.method == "ganspace"
    with pytest.raises(ValueError):
        dirs.Directions.load(tmp_path / "pca", w_dim=G.w_dim + 1)
    monkeypatch.setenv("GAN_CACHE_DIR", str(tmp_path / "cache"))
    dirs._MEMORY.clear()
    a = dirs.cached(G, "ab" * 32, "sefa", k=3)
    assert list((tmp_path / "cache").glob("*.npz"))
    dirs._MEMORY.clear()
    b = dirs.cached(G, "ab" * 32, "sefa", k=3)  # from disk
    assert np.array_equal(a.vectors, b.vectors)
    c = dirs.cached(G, "cd" * 32, "sefa", k=3)  # another checkpoint hash: computed afresh
    assert c is not b


def test_projection_of_a_generated_image_reaches_30db(G):
    with torch.no_grad():
        target = G.synthesis(G.mapping(z_from_seed(5, G.z_dim), psi=0.8))
    events = list(project(G, target, steps=100, wplus_steps=100, frame_every=50))
    last = events[-1]
    assert last.done and last.ws.shape == (1, G.num_ws, G.w_dim)
    assert last.psnr >= 30, last.psnr
    assert events[0].psnr < last.psnr
    assert sum(e.image is not None for e in events) >= 4  # live frames
    assert psnr(target, target) == float("inf")


def test_projection_validates_input(G):
    with pytest.raises(AssertionError, match="expected target"):
        run_projection(G, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError):
        run_projection(G, torch.zeros(1, 3, 16, 16), steps=0)
