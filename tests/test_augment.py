import pytest
import torch

from gan.augment import augment, color, cutout, parse_policy, translation


def test_p_zero_is_identity():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(augment(x, 0.0), x)


@pytest.mark.parametrize("op", [color, translation, cutout])
def test_each_op_changes_images_keeps_shape_and_is_differentiable(op):
    x = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = op(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_translation_moves_content_and_cutout_zeroes_a_square():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 8, 8] = 1
    moved = [translation(x, 1.0, torch.Generator().manual_seed(s)) for s in range(20)]
    assert any(not torch.equal(m, x) for m in moved)
    assert all(m.sum() <= x.sum() for m in moved)  # shifting never invents content
    y = cutout(torch.ones(4, 3, 16, 16), 1.0, torch.Generator().manual_seed(0))
    zero_frac = (y == 0).float().mean(dim=[1, 2, 3])
    assert ((zero_frac > 0.05) & (zero_frac <= 0.25 + 1e-6)).all()  # at most a (8x8)/(16x16) square


def test_probability_is_per_sample():
    x = torch.rand(400, 3, 8, 8)
    y = augment(x, 0.5, "color", torch.Generator().manual_seed(0))
    changed = (y - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.35 < changed.float().mean() < 0.65


def test_same_generator_state_gives_same_augmentation():
    x = torch.rand(4, 3, 16, 16)
    a = augment(x, 1.0, gen=torch.Generator().manual_seed(3))
    b = augment(x, 1.0, gen=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,rotate")


def test_tensor_p_matches_float_p_and_zero_is_exactly_the_identity():
    """The training loop keeps ADA's p on the device as a 0-dim tensor, so that adapting it never reads it back."""
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    for p in (0.3, 1.0):
        a = augment(x, p, gen=torch.Generator().manual_seed(1))
        b = augment(x, torch.tensor(p), gen=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
    assert torch.equal(augment(x, torch.tensor(0.0), gen=torch.Generator().manual_seed(1)), x)  # every op ran, as no-ops
