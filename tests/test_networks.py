import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan.config import ModelConfig
from gan.latent import z_from_seed, z_from_seeds
from gan.networks import (
    Discriminator,
    Generator,
    MinibatchStdLayer,
    downsample2d,
    fir_kernel,
    modulated_conv2d,
    upsample2d,
)


def test_default_config_num_ws_and_channels():
    cfg = ModelConfig()
    G = Generator(cfg)
    assert G.num_ws == 2 * int(math.log2(cfg.resolution)) - 2 == 10
    assert [cfg.channels(r) for r in (4, 8, 16, 32, 64)] == [256, 128, 64, 32, 16]


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_shapes_and_range(res, model_cfg):
    from tests.conftest import tiny_model_cfg

    cfg = tiny_model_cfg(res)
    G = Generator(cfg).eval()
    z = torch.randn(5, cfg.z_dim)
    ws = G.mapping(z)
    assert ws.shape == (5, G.num_ws, cfg.w_dim)
    img = G.synthesis(ws)
    assert img.shape == (5, 3, res, res)
    assert torch.isfinite(img).all()
    assert 0.05 < img.std() < 5  # equalized lr keeps activations near unit scale at init
    assert Discriminator(cfg)(img).shape == (5, 1)


def test_mapping_then_synthesis_equals_forward(model_cfg):
    G = Generator(model_cfg).eval()
    z = torch.randn(3, model_cfg.z_dim)
    a = G(z, psi=0.7, noise_mode="const")
    b = G.synthesis(G.mapping(z, psi=0.7), noise_mode="const")
    assert torch.equal(a, b)


def test_truncation_psi_zero_gives_w_avg(model_cfg):
    G = Generator(model_cfg).eval()
    G.mapping(torch.randn(64, model_cfg.z_dim), update_w_avg=True)  # give w_avg a non-zero value
    assert G.w_avg.abs().sum() > 0
    ws = G.mapping(torch.randn(4, model_cfg.z_dim), psi=0.0)
    assert torch.allclose(ws, G.w_avg.expand_as(ws))
    # cutoff: only the first layers are truncated
    ws = G.mapping(torch.randn(4, model_cfg.z_dim), psi=0.0, cutoff=2)
    assert torch.allclose(ws[:, :2], G.w_avg.expand(4, 2, -1))
    assert not torch.allclose(ws[:, 2:], G.w_avg.expand(4, G.num_ws - 2, -1))


def test_noise_modes(model_cfg):
    G = Generator(model_cfg).eval()
    for layer in G.style_layers():
        layer.noise_strength.data.fill_(0.5)
    ws = G.mapping(torch.randn(2, model_cfg.z_dim))
    assert torch.equal(G.synthesis(ws, "const"), G.synthesis(ws, "const"))
    assert not torch.equal(G.synthesis(ws, "random"), G.synthesis(ws, "random"))
    assert not torch.equal(G.synthesis(ws, "none"), G.synthesis(ws, "const"))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, "loud")


def test_noise_max_res_removes_noise_inputs_above_it(model_cfg):
    import dataclasses

    cfg = dataclasses.replace(model_cfg, noise_max_res=8)
    G = Generator(cfg).eval()
    with_noise = {layer.resolution for layer in G.style_layers() if layer.use_noise}
    assert with_noise == {4, 8}
    assert not any("noise" in k and ".blocks.2." in k for k in G.state_dict())  # no params or buffers above 8 px
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)
    ws = G.mapping(torch.randn(2, cfg.z_dim))
    assert not torch.equal(G.synthesis(ws, "none"), G.synthesis(ws, "const"))  # the 4 and 8 px noise still acts
    G_none = Generator(dataclasses.replace(model_cfg, noise_max_res=2)).eval()
    assert not any("noise" in k for k in G_none.state_dict())
    ws = G_none.mapping(torch.randn(2, cfg.z_dim))
    assert torch.equal(G_none.synthesis(ws, "random"), G_none.synthesis(ws, "none"))  # every mode is the same image


def test_shape_asserts_at_public_boundaries(model_cfg):
    G = Generator(model_cfg)
    with pytest.raises(AssertionError, match="expected z"):
        G.mapping(torch.randn(2, model_cfg.z_dim + 1))
    with pytest.raises(AssertionError, match="expected ws"):
        G.synthesis(torch.randn(2, G.num_ws - 1, model_cfg.w_dim))
    with pytest.raises(AssertionError, match="expected img"):
        Discriminator(model_cfg)(torch.randn(2, 3, 8, 8))


def test_modulated_conv_equals_per_sample_weight_modulation():
    """The non-fused form equals StyleGAN2's definition: w'_ijk = s_i w_ijk, w'' = w' / sqrt(sum w'^2)."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 8, 8), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    out = modulated_conv2d(x, weight, styles, demodulate=True)
    ref = []
    for b in range(3):
        w = weight * styles[b][None, :, None, None]
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        ref.append(F.conv2d(x[b : b + 1], w, padding=1))
    assert torch.allclose(out, torch.cat(ref), atol=1e-5)


def test_fir_resampling_shapes_and_dc_gain():
    f = fir_kernel()
    assert torch.isclose(f.sum(), torch.tensor(1.0))
    x = torch.ones(2, 4, 8, 8)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (2, 4, 16, 16) and down.shape == (2, 4, 4, 4)
    # a constant image stays constant away from the zero-padded border
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1)) and torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1))
    # the upsampler is centred: upsampling a symmetric image keeps it symmetric
    x = torch.randn(1, 1, 8, 8)
    x = x + x.flip(-1)
    u = upsample2d(x, f)
    assert torch.allclose(u, u.flip(-1), atol=1e-6)


def test_minibatch_std_layer():
    x = torch.randn(8, 6, 4, 4)
    y = MinibatchStdLayer(4)(x)
    assert y.shape == (8, 7, 4, 4)
    assert torch.allclose(MinibatchStdLayer(4)(torch.ones(8, 6, 4, 4))[:, -1], torch.full((8, 4, 4), 1e-4), atol=1e-4)
    assert MinibatchStdLayer(4)(torch.randn(6, 6, 4, 4)).shape == (6, 7, 4, 4)  # batch not divisible by 4


def test_z_from_seed_is_nvlabs_compatible_and_stable():
    z = z_from_seed(0, 4)
    assert z.shape == (1, 4) and z.dtype == torch.float32
    expected = np.random.RandomState(0).randn(1, 4)
    assert np.allclose(z.numpy(), expected)
    assert abs(z[0, 0].item() - 1.7640523) < 1e-6  # a constant of MT19937: same on every machine
    assert torch.equal(z_from_seeds([3, 3], 8)[0], z_from_seeds([3, 3], 8)[1])
    with pytest.raises(ValueError):
        z_from_seed(-1, 4)


def test_same_seed_same_image_bit_exact(model_cfg, tmp_path):
    from gan.checkpoint import load_checkpoint, save_checkpoint
    from gan.latent import render, seeds_to_ws

    G = Generator(model_cfg).eval()
    path = save_checkpoint(tmp_path / "g.safetensors", model_cfg, G)
    imgs = [render(load_checkpoint(path).G_ema, seeds_to_ws(load_checkpoint(path).G_ema, [7, 8], psi=0.7)) for _ in range(2)]
    assert imgs[0].dtype == np.uint8 and imgs[0].shape == (2, 16, 16, 3)
    assert np.array_equal(imgs[0], imgs[1])


@pytest.mark.parametrize("resample_mode", ["studio", "nvlabs"])
def test_batch_invariant_synthesis_gives_a_row_the_same_bits_in_any_batch(resample_mode):
    """Served generators render a row alone, in a scrub strip and in a crowd's batch: the same bits each time (the
    default, shipped-size architecture, where the plain CPU path picks kernels by batch size). The mode changes the
    rounding only, and gradients still flow (inversion on a GPU goes through the served G)."""
    torch.manual_seed(0)
    G = Generator(ModelConfig(resample_mode=resample_mode)).eval()
    ws = G.mapping(torch.randn(21, G.z_dim), psi=0.7).detach()  # (21, num_ws, w_dim)
    with torch.no_grad():
        plain = G.synthesis(ws)
        G.batch_invariant_()
        together = G.synthesis(ws)  # (21, 3, 64, 64)
        assert torch.allclose(together, plain, atol=1e-4)
        for i in (0, 7, 20):
            assert torch.equal(G.synthesis(ws[i : i + 1])[0], together[i])
        assert torch.equal(G.synthesis(ws[3:6]), together[3:6])
    w = ws[:2].clone().requires_grad_(True)
    G.synthesis(w).square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    G.batch_invariant_(False)
    assert not any(getattr(m, "batch_invariant", False) for m in G.modules())
