import numpy as np
import pytest
import torch

from gan.latent import interpolate_seeds, keyframe_path, lerp, mix_styles, parse_seeds, slerp
from gan.networks import Generator


def test_keyframe_path_lengths_and_endpoints():
    keys = torch.randn(3, 5)
    open_path = keyframe_path(keys, 4, "slerp", loop=False)
    assert open_path.shape == (2 * 4 + 1, 5)
    assert torch.allclose(open_path[0], keys[0], atol=1e-5) and torch.allclose(open_path[4], keys[1], atol=1e-5)
    assert torch.allclose(open_path[-1], keys[2], atol=1e-5)
    loop = keyframe_path(keys, 4, "lerp", loop=True)
    assert loop.shape == (3 * 4, 5)
    assert torch.allclose(loop[8], keys[2])  # the last segment heads back to the first key
    with pytest.raises(ValueError):
        keyframe_path(keys[:1], 4)


def test_slerp_keeps_norm_between_equal_norm_keys_and_lerp_does_not():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    t = torch.tensor([0.5])
    assert torch.allclose(slerp(a, b, t).norm(), torch.tensor(1.0), atol=1e-5)
    assert lerp(a, b, t).norm() < 0.8


def test_interpolate_seeds_frames(model_cfg):
    G = Generator(model_cfg).eval()
    frames = interpolate_seeds(G, [1, 2, 3], frames_per_segment=3, space="w", loop=True)
    assert frames.shape == (9, 16, 16, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])
    z_frames = interpolate_seeds(G, [1, 2], frames_per_segment=2, space="z")
    assert np.array_equal(z_frames[0], frames[0])  # both start on seed 1 (w of seed 1 either way)
    with pytest.raises(ValueError, match="space"):
        interpolate_seeds(G, [1, 2], space="q")


def test_mix_styles_only_touches_the_range():
    a, b = torch.zeros(2, 6, 4), torch.ones(2, 6, 4)
    m = mix_styles(a, b, 2, 4)
    assert m[:, 2:4].eq(1).all() and m[:, :2].eq(0).all() and m[:, 4:].eq(0).all()
    with pytest.raises(ValueError):
        mix_styles(a, b, 4, 9)


def test_parse_seeds():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds("7") == [7]
    for bad in ("", "5-2", "-1", "a"):
        with pytest.raises(ValueError):
            parse_seeds(bad)
