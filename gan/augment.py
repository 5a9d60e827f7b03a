"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) with an ADA-style per-sample probability p.

The same `augment()` is applied to real and fake images, in both the D and the G step, so D never sees an
augmentation that only one side has (which would leak into G's output). Each op is applied to each sample
independently with probability p; p is adapted by the training loop to keep E[sign(D(real))] near a target.

p may be a Python float or a 0-dim tensor on the images' device (the training loop's ADA p, which lives on the
device so that adapting it never reads a value back). Randoms are drawn from `gen`, which should be a generator
on the images' device: then an augmentation does no host<->device copy at all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Prob = float | torch.Tensor  # a probability: a Python float or a 0-dim tensor on the device

POLICIES = ("color", "translation", "cutout")


def _mask(B: int, p: Prob, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """(B, 1, 1, 1) float mask: 1 where this op applies to the sample."""
    return (torch.rand(B, 1, 1, 1, generator=gen, device=gen.device if gen else x.device) < p).to(x.dtype).to(x.device)


def _rand(shape: tuple[int, ...], x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, device=gen.device if gen else x.device).to(x.dtype).to(x.device)


def color(x: torch.Tensor, p: Prob, gen: torch.Generator | None = None) -> torch.Tensor:
    """Brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5] (images in [-1, 1])."""
    B = x.shape[0]
    m = _mask(B, p, x, gen)
    x = x + m * (_rand((B, 1, 1, 1), x, gen) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = x + m * (mean + (x - mean) * (_rand((B, 1, 1, 1), x, gen) * 2) - x)
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = x + m * (mean + (x - mean) * (_rand((B, 1, 1, 1), x, gen) + 0.5) - x)
    return x


def translation(x: torch.Tensor, p: Prob, gen: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio * size pixels in x and y, padding with the border colour's equivalent: zeros."""
    B, C, H, W = x.shape
    sx, sy = int(H * ratio + 0.5), int(W * ratio + 0.5)
    m = _mask(B, p, x, gen).view(B, 1, 1)
    tx = ((_rand((B, 1, 1), x, gen) * (2 * sx + 1)).floor() - sx) * m
    ty = ((_rand((B, 1, 1), x, gen) * (2 * sy + 1)).floor() - sy) * m
    gy, gx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
    gy = (gy[None] + tx.long() + 1).clamp(0, H + 1)  # (B, H, W)
    gx = (gx[None] + ty.long() + 1).clamp(0, W + 1)
    x_pad = F.pad(x, [1, 1, 1, 1])  # (B, C, H+2, W+2)
    idx = (gy * (W + 2) + gx).view(B, 1, H * W).expand(B, C, H * W)
    return x_pad.flatten(2).gather(2, idx).view(B, C, H, W)


def cutout(x: torch.Tensor, p: Prob, gen: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero out one square of ratio * size at a random position."""
    B, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    m = _mask(B, p, x, gen).view(B, 1, 1)
    ox = (_rand((B, 1, 1), x, gen) * (H + 1 - ch % 2)).long()
    oy = (_rand((B, 1, 1), x, gen) * (W + 1 - cw % 2)).long()
    gy, gx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
    top, left = ox - ch // 2, oy - cw // 2  # (B, 1, 1) corner of the square (may hang over the edge)
    inside = (gy[None] >= top) & (gy[None] < top + ch) & (gx[None] >= left) & (gx[None] < left + cw)  # (B, H, W)
    keep = 1 - inside.to(x.dtype) * m
    return x * keep.unsqueeze(1)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> list[str]:
    names = [s.strip() for s in policy.split(",") if s.strip()]
    bad = [n for n in names if n not in OPS]
    if bad:
        raise ValueError(f"unknown augmentation(s) {bad}; choose from {list(OPS)}")
    return names


def augment(x: torch.Tensor, p: Prob, policy: str = "color,translation,cutout", gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply each op of `policy` to each image with probability p. x: (B, C, H, W) in [-1, 1]; same shape out.

    With p = 0 every op is the identity exactly (masked terms are multiplied by 0), so a tensor p that happens to
    be 0 gives back x unchanged; only a Python p <= 0 skips the work, since comparing a tensor would read it.
    """
    if not isinstance(p, torch.Tensor) and p <= 0:
        return x
    for name in parse_policy(policy):
        x = OPS[name](x, p, gen)
    return x
