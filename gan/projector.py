"""Inversion: find ws that make the generator reproduce a given image.

No pretrained perceptual network can be downloaded here, so the loss is built from what we have:
  - pixel MSE at several scales (full, 1/2, 1/4: coarse scales steer shape and colour early),
  - a feature loss in the shipped discriminator's block activations (when a D is given), normalised per block.
Phase 1 optimises a single w (W space, starting from w_avg), which stays on the generator's manifold and edits
well; phase 2 (optional) frees each layer's w (W+), which matches details better. Noise is held constant.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from gan.images import to_uint8
from gan.networks import Discriminator, Generator


@dataclass
class ProjectEvent:
    step: int  # optimisation steps so far (both phases)
    phase: str  # 'w' or 'w+'
    loss: float  # total loss
    psnr: float  # PSNR of the current reconstruction vs the target, dB
    image: np.ndarray | None = None  # (H, W, 3) uint8 current reconstruction (every `frame_every` steps and at the end)
    ws: torch.Tensor | None = None  # (1, num_ws, w_dim) result, on the last event
    done: bool = False


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def _lr(t: float, base: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """SG2-ADA projector schedule: linear warm-up, cosine ramp-down. t in [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / rampup)


class ReconstructionLoss:
    """Multi-scale pixel MSE + discriminator-feature distance to a fixed target."""

    def __init__(self, target: torch.Tensor, D: Discriminator | None = None, feature_weight: float = 0.1, scales: int = 3):
        self.target = target  # (1, 3, H, W)
        self.D = D
        self.feature_weight = feature_weight if D is not None else 0.0
        self.scales = scales
        self.target_pyr = self._pyramid(target)
        self.target_feats = self._features(target) if self.feature_weight else []

    def _pyramid(self, img: torch.Tensor) -> list[torch.Tensor]:
        out = [img]
        for _ in range(self.scales - 1):
            out.append(F.avg_pool2d(out[-1], 2))
        return out

    def _features(self, img: torch.Tensor) -> list[torch.Tensor]:
        return [f / (f.square().mean(dim=[1, 2, 3], keepdim=True).sqrt() + 1e-8) for f in self.D.features(img)]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        loss = sum(F.mse_loss(a, b) for a, b in zip(self._pyramid(img), self.target_pyr))
        if self.feature_weight:
            loss = loss + self.feature_weight * sum(F.mse_loss(a, b) for a, b in zip(self._features(img), self.target_feats))
        return loss


def project(
    G: Generator,
    target: torch.Tensor,  # (1, 3, H, W) in [-1, 1], on G's device
    steps: int = 300,  # phase-1 (W) steps
    wplus_steps: int = 200,  # phase-2 (W+) steps; 0 to stay in W
    lr: float = 0.05,  # peak Adam learning rate
    D: Discriminator | None = None,  # optional: its features join the loss
    feature_weight: float = 0.1,  # weight of the D-feature term
    frame_every: int = 10,  # attach the current image every N steps
    stop: threading.Event | None = None,  # ends the optimisation early (the best-so-far ws is returned)
) -> Iterator[ProjectEvent]:
    """Yield a ProjectEvent per step; the last one (done=True) carries the best ws found."""
    R = G.img_resolution
    assert target.shape == (1, 3, R, R), f"expected target (1, 3, {R}, {R}), got {tuple(target.shape)}"
    if steps < 1 or wplus_steps < 0 or steps + wplus_steps > 5000:
        raise ValueError("steps must be >= 1, wplus_steps >= 0, and together at most 5000")
    G.requires_grad_(False)
    if D is not None:
        D.requires_grad_(False)
    loss_fn = ReconstructionLoss(target, D, feature_weight)
    w = G.w_avg.detach().clone()[None]  # (1, w_dim)
    best = (float("inf"), w.unsqueeze(1).repeat(1, G.num_ws, 1))
    step = 0
    for phase, n in (("w", steps), ("w+", wplus_steps)):
        if n == 0:
            continue
        if phase == "w":
            param = w.requires_grad_(True)
            expand = lambda p: p.unsqueeze(1).repeat(1, G.num_ws, 1)  # noqa: E731  (1, w_dim) -> (1, num_ws, w_dim)
        else:
            param = best[1].detach().clone().requires_grad_(True)  # (1, num_ws, w_dim)
            expand = lambda p: p  # noqa: E731
        opt = torch.optim.Adam([param], lr=lr, betas=(0.9, 0.999))
        for i in range(n):
            if stop is not None and stop.is_set():
                break
            for g in opt.param_groups:
                g["lr"] = _lr((i + 1) / n, lr)
            ws = expand(param)
            img = G.synthesis(ws, noise_mode="const")  # (1, 3, H, W)
            loss = loss_fn(img)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = float(loss.detach())
            if value < best[0]:
                best = (value, ws.detach().clone())
            frame = to_uint8(img.detach())[0] if step % frame_every == 0 else None
            yield ProjectEvent(step, phase, value, psnr(img.detach(), target), frame)
        if stop is not None and stop.is_set():
            break
    with torch.no_grad():
        final = G.synthesis(best[1], noise_mode="const")
    yield ProjectEvent(step, "w+" if wplus_steps and step > steps else "w", best[0], psnr(final, target), to_uint8(final)[0], best[1], True)


def run_projection(G: Generator, target: torch.Tensor, **kw) -> ProjectEvent:
    """Run `project` to the end and return its last event."""
    ev = None
    for ev in project(G, target, **kw):
        pass
    return ev
