"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) with an ADA-style per-sample probability p.

The same `augment()` is applied to real and fake images, in both the D and the G step, so D never sees an
augmentation that only one side has (which would leak into G's output). Each op is applied to each sample
independently with probability p; p is adapted by the training loop to keep E[sign(D(real))] near a target.

p may be a Python float or a 0-dim tensor on the images' device (the training loop's ADA p, which lives on the
device so that adapting it never reads a value back). Randoms are drawn from `gen`, which should be a generator
on the images' device: then an augmentation does no host<->device copy at all.
"""
from __future__ import annotations

from collections.abc import Callable

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


class AdaptiveAugment:
    """The augmentation state of a run: p on the device, adapted ADA-style, and applied by calling the object.

    `aug_p` is the one public value. p lives on the device so that adapting it never reads a value back (a GPU step
    never waits); the host keeps the last value it read, which is what events report and what lets a known p = 0
    skip the work. ADA: every `interval` steps p moves by sign(E[sign D(real)] - target) * batch * interval /
    (kimg * 1000), so it can go 0 -> 1 in `kimg` thousand images.
    """

    def __init__(
        self,
        mode: str,  # 'ada' (adaptive p), 'fixed' (constant p) or 'none'
        p: float,  # initial (or fixed) probability
        policy: str,  # DiffAugment ops, e.g. 'color,translation,cutout'
        device: torch.device,  # where p and the randoms live
        target: float = 0.6,  # ADA target of E[sign(D(real))]
        interval: int = 4,  # adjust p every this many steps
        kimg: int = 100,  # p can move 0 -> 1 in this many thousand images
        read_back: bool = True,  # read p after each adjustment (free on a CPU; a sync on a GPU)
    ):
        parse_policy(policy)
        self.mode, self.policy = mode, policy
        self.target, self.interval, self.kimg, self.read_back = target, interval, kimg, read_back
        start = float(p) if mode != "none" else 0.0
        self.p = torch.tensor(start, device=device)  # 0-dim fp32, the value the ops use
        self._host: float | None = start  # p as the host knows it; None: changed on the device, not read yet
        self.seen = start  # the last value read (what events report)
        self._sign_sum = torch.zeros([], device=device)  # sum of sign(D(real)) means since the last adjustment
        self._sign_n = 0
        self.gen = torch.Generator(device)  # the augmentation's own random stream (seeded by the run)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """img (B, C, H, W) -> augmented, same shape; skipped only when the host knows p is exactly 0."""
        if self.mode == "none" or self._host == 0.0:
            return img
        return augment(img, self.p, self.policy, gen=self.gen)

    @property
    def aug_p(self) -> float:
        """The probability now (reads the device value: call it between steps, not inside one)."""
        return float(self.p)

    @aug_p.setter
    def aug_p(self, value: float) -> None:
        self.p.fill_(float(value))
        self._host = self.seen = float(self.p)

    def observe(self, sign_real: torch.Tensor) -> None:
        """Add one D step's mean sign(D(real)) (a 0-dim device tensor) to ADA's statistic."""
        self._sign_sum += sign_real
        self._sign_n += 1

    def adapt(self, step: int, batch: int, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t, world_size: int = 1) -> None:
        """After step `step` (1-based): move p towards the target when ADA is on and an interval has passed."""
        if self.mode != "ada" or step % self.interval or self._sign_n == 0:
            return
        mean_sign = all_reduce_sum(self._sign_sum) / (self._sign_n * world_size)
        adjust = torch.sign(mean_sign - self.target) * (batch * self.interval / (self.kimg * 1000))
        self.p.copy_((self.p + adjust).clamp(0.0, 1.0))
        self.reset_statistic()
        self._host = float(self.p) if self.read_back else None
        if self._host is not None:
            self.seen = self._host

    def reset_statistic(self) -> None:
        self._sign_sum.zero_()
        self._sign_n = 0

    def note_read(self, value: float) -> None:
        """The host has just read p (at a log step, with the other statistics): remember it."""
        self._host = self.seen = value
