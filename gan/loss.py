"""The StyleGAN2 / SG2-ADA loss as its own unit, with named phases (the layout of NVlabs' training/loss.py).

    Dmain   softplus(D(aug(G(z)))) + softplus(-D(aug(real)))        non-saturating logistic loss of D
    Dreg    R1 = gamma/2 * |grad_x D(aug(real))|^2, scaled by the lazy interval
    Dboth   Dmain and Dreg from one forward pass over the reals (what the shipped loop runs on R1 steps)
    Gmain   softplus(-D(aug(G(z))))                                  non-saturating loss of G
            [+ cdc_weight * distance consistency to a frozen source G]   few-shot fine-tuning only (gan/cdc.py)

Conditional models (labels c, design notes section 9) train transitionally (Shahbazi et al., ICLR 2022): D scores
an image twice, unconditionally (u) and with its label (p = u + projection term), and every logistic term becomes
    softplus(+-u) + lambda * softplus(+-p)
with lambda = G's label_lambda, the same weight that lets the label into G's mapping. R1 penalises the gradient of
u + lambda * p, so at lambda = 0 everything (images, scores, losses, gradients) is the unconditional model's. The
training loop ramps lambda 0 -> 1 on the device (TrainState), so the loss never reads it on the host.

`accumulate_gradients` runs one phase and calls backward, so gradients accumulate in the parameters' .grad; the
caller (gan/training.py) owns the optimizers, the all-reduce across ranks and which parameters require grad. Every
statistic comes back as a detached 0-dim tensor on the device: nothing here reads a value on the host, so a step
never waits for the GPU.

Mixed precision (`amp_dtype=torch.bfloat16`): G's synthesis and D run under autocast, so their convolutions run
in bf16; the mapping network, the losses and R1 stay in fp32 (bf16 has fp32's range, so no loss scaler is needed).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from gan.cdc import distance_consistency_loss, synthesis_features
from gan.networks import Discriminator, Generator

PHASES = ("Dmain", "Dreg", "Dboth", "Gmain")


class StyleGAN2Loss:
    def __init__(
        self,
        G: Generator,  # the generator being trained (not G_ema)
        D: Discriminator,  # the discriminator being trained
        augment_pipe: Callable[[torch.Tensor], torch.Tensor],  # img -> augmented img, the same for reals and fakes
        r1_gamma: float,  # R1 weight
        r1_interval: int,  # lazy R1: Dreg runs every this many steps, so its loss is scaled up by it
        amp_dtype: torch.dtype | None = None,  # torch.bfloat16: convs of G and D under autocast; None: fp32
        source_G: Generator | None = None,  # frozen starting generator for the distance consistency term
        cdc_weight: float = 0.0,  # weight of that term (0: off)
    ):
        self.G, self.D = G, D
        self.source_G, self.cdc_weight = source_G, cdc_weight
        # The middle synthesis blocks (8-32 px at 64 px): layout and parts, where a collapse shows; not the 4x4
        # constant block nor the highest resolution, which carries the new style itself.
        n = len(G.synthesis_net.blocks)
        self.cdc_blocks = tuple(range(1, max(2, n - 1)))
        self.augment_pipe = augment_pipe
        self.r1_gamma, self.r1_interval = r1_gamma, r1_interval
        self.amp_dtype = amp_dtype

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def mapping(self, z: torch.Tensor, z2: torch.Tensor | None, cutoff: torch.Tensor | None, update_w_avg: bool = False,
                c: torch.Tensor | None = None) -> torch.Tensor:
        """ws (B, num_ws, w_dim) with style mixing: layers >= cutoff take their w from z2 (with the same label c).

        `cutoff` is a 0-dim int64 tensor on the device (num_ws means no mixing), so the choice of mixing is made on
        the device and never read back; the second mapping is always computed (it is tiny next to synthesis).
        """
        ws = self.G.mapping(z, c=c, update_w_avg=update_w_avg)  # (B, num_ws, w_dim)
        if z2 is None or cutoff is None:
            return ws
        ws2 = self.G.mapping(z2, c=c)  # (B, num_ws, w_dim)
        layer = torch.arange(ws.shape[1], device=ws.device)  # (num_ws,)
        return torch.where((layer >= cutoff)[None, :, None], ws2, ws)  # (B, num_ws, w_dim)

    def run_G(self, ws: torch.Tensor) -> torch.Tensor:
        """ws -> img (B, 3, R, R) in fp32 (the synthesis convs run in bf16 under autocast)."""
        with self._autocast(ws.device):
            img = self.G.synthesis(ws, noise_mode="random")
        return img.float()

    def run_D(self, img: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """img -> augmented -> (unconditional logits u (B, 1), conditional logits p = u + projection (B, 1) or None
        without a label), in fp32."""
        img = self.augment_pipe(img)
        with self._autocast(img.device):
            if c is None:
                return self.D(img).float(), None
            u, proj = self.D.logits(img, c)  # the two terms apart: the loss weighs the conditional one by lambda
        return u.float(), (u + proj).float()

    def _label_lambda(self) -> torch.Tensor | None:
        """G's transition weight as a 0-dim device tensor (None: unconditional G)."""
        return self.G.mapping_net.label_lambda if self.G.c_dim else None

    @staticmethod
    def _logistic(u: torch.Tensor, p: torch.Tensor | None, lam: torch.Tensor | None, sign: float) -> torch.Tensor:
        """mean softplus(sign * u) [+ lambda * mean softplus(sign * p)]: one term of the transitional loss."""
        loss = F.softplus(sign * u).mean()
        if p is not None and lam is not None:
            loss = loss + lam * F.softplus(sign * p).mean()
        return loss

    def accumulate_gradients(
        self,
        phase: str,  # one of PHASES
        real: torch.Tensor,  # (B, 3, R, R) reals in [-1, 1] (unused by Gmain)
        z: torch.Tensor,  # (B, z_dim) latents of the fakes (unused by Dreg)
        z2: torch.Tensor | None = None,  # (B, z_dim) second latents for style mixing, or None
        cutoff: torch.Tensor | None = None,  # 0-dim int64: first layer that takes z2's w (num_ws: none)
        c_real: torch.Tensor | None = None,  # (B, c_dim) labels of the reals (conditional models only)
        c_gen: torch.Tensor | None = None,  # (B, c_dim) labels the fakes are drawn for (conditional models only)
    ) -> dict[str, torch.Tensor]:
        """Run one phase's forward and backward; return its statistics as detached device tensors."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if (self.G.c_dim > 0) != (c_gen is not None) or (c_real is not None and c_gen is None):
            raise ValueError("a conditional model needs labels for its fakes (an unconditional one none)")
        lam = self._label_lambda()
        # Reals without labels (a user's own images): G still draws for c_gen, but D scores unconditionally only.
        c_fake_D = c_gen if c_real is not None else None
        stats: dict[str, torch.Tensor] = {}
        if phase == "Gmain":
            ws = self.mapping(z, z2, cutoff, update_w_avg=True, c=c_gen)
            u, p = self.run_D(self.run_G(ws), c_fake_D)  # (B, 1) each
            loss_G = self._logistic(u, p, lam, -1.0)
            stats["loss_G"] = loss_G.detach()
            if self.cdc_weight > 0 and self.source_G is not None:
                # The same ws through both generators, const noise, so only the weights differ.
                with torch.no_grad():
                    _, feats_src = synthesis_features(self.source_G, ws.detach(), self.cdc_blocks)
                with self._autocast(ws.device):
                    _, feats_tgt = synthesis_features(self.G, ws.detach(), self.cdc_blocks)
                cdc = distance_consistency_loss(feats_src, feats_tgt)
                stats["cdc"] = cdc.detach()
                loss_G = loss_G + self.cdc_weight * cdc
            _backward(loss_G)
            return stats

        do_main, do_reg = phase in ("Dmain", "Dboth"), phase in ("Dreg", "Dboth")
        total = None
        if do_main:
            with torch.no_grad():
                fake = self.run_G(self.mapping(z, z2, cutoff, c=c_gen))  # (B, 3, R, R); G gets no gradient in a D phase
            logits_fake, p_fake = self.run_D(fake, c_fake_D)  # (B, 1) each
            stats["D_fake"] = logits_fake.detach().mean()
            total = self._logistic(logits_fake, p_fake, lam, 1.0)
        real_in = real.detach().requires_grad_(do_reg)
        logits_real, p_real = self.run_D(real_in, c_real)  # (B, 1) each
        if do_main:
            total = total + self._logistic(logits_real, p_real, lam, -1.0)
            stats["loss_D"] = total.detach()
            stats["D_real"] = logits_real.detach().mean()
            stats["sign_real"] = logits_real.detach().sign().mean()  # ADA's overfitting heuristic r_t
        if do_reg:
            if logits_real.requires_grad:
                scored = logits_real.sum() if p_real is None else logits_real.sum() + lam * p_real.sum()
                (grad,) = torch.autograd.grad(scored, real_in, create_graph=True)  # (B, 3, R, R), fp32
                r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            else:  # D was replaced by something without a graph (tests): the penalty is its value, no gradient
                r1 = torch.zeros_like(logits_real.sum()) * logits_real.sum()
            reg = r1 * (self.r1_gamma / 2) * self.r1_interval
            total = reg if total is None else total + reg
            stats["r1"] = r1.detach()
        _backward(total)
        return stats


def _backward(loss: torch.Tensor) -> None:
    """loss.backward(), unless nothing in it needs a gradient (a patched-out network); decided on the host."""
    if loss.requires_grad:
        loss.backward()
