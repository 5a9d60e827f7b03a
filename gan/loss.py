"""The losses as their own units, with named phases (the layout of NVlabs' training/loss.py).

`StyleGAN2Loss` (the residual D of gan/networks.py):

    Dmain   softplus(D(aug(G(z)))) + softplus(-D(aug(real)))        non-saturating logistic loss of D
    Dreg    R1 = gamma/2 * |grad_x D(aug(real))|^2, scaled by the lazy interval
    Dboth   Dmain and Dreg from one forward pass over the reals (what the shipped loop runs on R1 steps)
    Gmain   softplus(-D(aug(G(z))))                                  non-saturating loss of G
            [+ cdc_weight * distance consistency to a frozen source G]   few-shot fine-tuning only (gan/cdc.py)

`HingeLoss` (the projected D of gan/projected.py; Projected GAN, Sauer et al. 2021): no R1, D sees only
DiffAugment'ed images through frozen pretrained features, so its phases are
    Dmain   relu(1 - D(aug(real))) + relu(1 + D(aug(G(z))))           hinge loss of D (per-pixel logits, averaged)
    Gmain   -D(aug(G(z)))                                             [+ the same distance consistency term]

Both share `GANLoss`: style-mixed mapping, G under autocast, the augmented D call and the generator phase, and
`d_phase(step)` names the D phase a training step runs (lazy R1 decides it for StyleGAN2Loss). A discriminator kind
is a (D, loss) pair (gan/discriminators.py), so the loop never knows which one it runs.

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
from gan.networks import Generator


class GANLoss:
    """What every loss shares: the mapping with style mixing, G and D calls, the label weight and the G phase."""

    PHASES: tuple[str, ...] = ()

    def __init__(
        self,
        G: Generator,  # the generator being trained (not G_ema)
        D: torch.nn.Module,  # the discriminator being trained: D.logits(img, c) -> (u (B, K), projection (B, K) or None)
        augment_pipe: Callable[[torch.Tensor], torch.Tensor],  # img -> augmented img, the same for reals and fakes
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
        self.amp_dtype = amp_dtype

    def d_phase(self, step: int) -> str:
        """The D phase training step `step` (0-based) runs."""
        return "Dmain"

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
        """img -> augmented -> (unconditional logits u (B, K), conditional logits p = u + projection (B, K) or None
        without a label), in fp32. K = 1 for the residual D; the projected D scores K patches per image."""
        img = self.augment_pipe(img)
        with self._autocast(img.device):
            u, proj = self.D.logits(img, c)  # the two terms apart: the loss weighs the conditional one by lambda
        return u.float(), None if proj is None else (u + proj).float()

    def _label_lambda(self) -> torch.Tensor | None:
        """G's transition weight as a 0-dim device tensor (None: unconditional G)."""
        return self.G.mapping_net.label_lambda if self.G.c_dim else None

    @staticmethod
    def _transitional(term: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, p: torch.Tensor | None,
                      lam: torch.Tensor | None) -> torch.Tensor:
        """mean term(u) [+ lambda * mean term(p)]: one term of the transitional loss."""
        loss = term(u).mean()
        if p is not None and lam is not None:
            loss = loss + lam * term(p).mean()
        return loss

    def _check(self, phase: str, c_real: torch.Tensor | None, c_gen: torch.Tensor | None) -> None:
        if phase not in self.PHASES:
            raise ValueError(f"phase must be one of {self.PHASES}, got {phase!r}")
        if (self.G.c_dim > 0) != (c_gen is not None) or (c_real is not None and c_gen is None):
            raise ValueError("a conditional model needs labels for its fakes (an unconditional one none)")

    def _g_term(self, u: torch.Tensor, p: torch.Tensor | None, lam: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def discriminator_phase(self, phase: str, real: torch.Tensor, z: torch.Tensor, z2: torch.Tensor | None,
                            cutoff: torch.Tensor | None, c_real: torch.Tensor | None, c_gen: torch.Tensor | None,
                            c_fake_D: torch.Tensor | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

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
        self._check(phase, c_real, c_gen)
        # Reals without labels (a user's own images): G still draws for c_gen, but D scores unconditionally only.
        c_fake_D = c_gen if c_real is not None else None
        if phase == "Gmain":
            return self.generator_phase(z, z2, cutoff, c_gen, c_fake_D)
        return self.discriminator_phase(phase, real, z, z2, cutoff, c_real, c_gen, c_fake_D)

    def generator_phase(self, z: torch.Tensor, z2: torch.Tensor | None, cutoff: torch.Tensor | None,
                        c_gen: torch.Tensor | None, c_fake_D: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Gmain: G's adversarial term (+ distance consistency), backward into G's parameters."""
        ws = self.mapping(z, z2, cutoff, update_w_avg=True, c=c_gen)
        u, p = self.run_D(self.run_G(ws), c_fake_D)  # (B, K) each
        loss_G = self._g_term(u, p, self._label_lambda())
        stats = {"loss_G": loss_G.detach()}
        if self.cdc_weight > 0 and self.source_G is not None:
            # The same ws through both generators, const noise, so only the weights differ.
            with torch.no_grad():
                _, feats_src = synthesis_features(self.source_G, ws.detach(), self.cdc_blocks)
            with self._autocast(ws.device):
                _, feats_tgt = synthesis_features(self.G, ws.detach(), self.cdc_blocks)
            cdc = distance_consistency_loss(feats_src, feats_tgt)
            stats["cdc"] = cdc.detach()
            loss_G = loss_G + self.cdc_weight * cdc
        loss_G.backward()
        return stats

    def fake_scores(self, z: torch.Tensor, z2: torch.Tensor | None, cutoff: torch.Tensor | None,
                    c_gen: torch.Tensor | None, c_fake_D: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's scores of fresh fakes, with no gradient into G (a D phase)."""
        with torch.no_grad():
            fake = self.run_G(self.mapping(z, z2, cutoff, c=c_gen))  # (B, 3, R, R)
        return self.run_D(fake, c_fake_D)  # (B, K) each


class StyleGAN2Loss(GANLoss):
    """Non-saturating logistic loss with lazy R1 (SG2-ADA)."""

    PHASES = ("Dmain", "Dreg", "Dboth", "Gmain")

    def __init__(
        self,
        G: Generator,  # the generator being trained (not G_ema)
        D: torch.nn.Module,  # the residual discriminator being trained
        augment_pipe: Callable[[torch.Tensor], torch.Tensor],  # img -> augmented img, the same for reals and fakes
        r1_gamma: float,  # R1 weight
        r1_interval: int,  # lazy R1: Dreg runs every this many steps, so its loss is scaled up by it
        amp_dtype: torch.dtype | None = None,  # torch.bfloat16: convs of G and D under autocast; None: fp32
        source_G: Generator | None = None,  # frozen starting generator for the distance consistency term
        cdc_weight: float = 0.0,  # weight of that term (0: off)
    ):
        super().__init__(G, D, augment_pipe, amp_dtype, source_G, cdc_weight)
        self.r1_gamma, self.r1_interval = r1_gamma, r1_interval

    def d_phase(self, step: int) -> str:
        """Dboth (Dmain + R1 from one forward over the reals) every r1_interval steps, else Dmain."""
        do_r1 = self.r1_gamma > 0 and self.r1_interval > 0 and step % self.r1_interval == 0
        return "Dboth" if do_r1 else "Dmain"

    def _g_term(self, u: torch.Tensor, p: torch.Tensor | None, lam: torch.Tensor | None) -> torch.Tensor:
        return self._transitional(lambda x: F.softplus(-x), u, p, lam)

    def discriminator_phase(self, phase: str, real: torch.Tensor, z: torch.Tensor, z2: torch.Tensor | None,
                            cutoff: torch.Tensor | None, c_real: torch.Tensor | None, c_gen: torch.Tensor | None,
                            c_fake_D: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Dmain, Dreg or Dboth: logistic terms on fakes and reals, and/or R1 on the reals."""
        lam = self._label_lambda()
        do_main, do_reg = phase in ("Dmain", "Dboth"), phase in ("Dreg", "Dboth")
        stats: dict[str, torch.Tensor] = {}
        total = None
        if do_main:
            logits_fake, p_fake = self.fake_scores(z, z2, cutoff, c_gen, c_fake_D)  # (B, 1) each
            stats["D_fake"] = logits_fake.detach().mean()
            total = self._transitional(F.softplus, logits_fake, p_fake, lam)
        real_in = real.detach().requires_grad_(do_reg)
        logits_real, p_real = self.run_D(real_in, c_real)  # (B, 1) each
        if do_main:
            total = total + self._transitional(lambda x: F.softplus(-x), logits_real, p_real, lam)
            stats["loss_D"] = total.detach()
            stats["D_real"] = logits_real.detach().mean()
            stats["sign_real"] = logits_real.detach().sign().mean()  # ADA's overfitting heuristic r_t
        if do_reg:
            scored = logits_real.sum() if p_real is None else logits_real.sum() + lam * p_real.sum()
            (grad,) = torch.autograd.grad(scored, real_in, create_graph=True)  # (B, 3, R, R), fp32
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            reg = r1 * (self.r1_gamma / 2) * self.r1_interval
            total = reg if total is None else total + reg
            stats["r1"] = r1.detach()
        total.backward()
        return stats


class HingeLoss(GANLoss):
    """The hinge loss of Projected GAN: no gradient penalty (D's features are frozen and its heads spectral-normed)."""

    PHASES = ("Dmain", "Gmain")

    def _g_term(self, u: torch.Tensor, p: torch.Tensor | None, lam: torch.Tensor | None) -> torch.Tensor:
        return self._transitional(lambda x: -x, u, p, lam)

    def discriminator_phase(self, phase: str, real: torch.Tensor, z: torch.Tensor, z2: torch.Tensor | None,
                            cutoff: torch.Tensor | None, c_real: torch.Tensor | None, c_gen: torch.Tensor | None,
                            c_fake_D: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Dmain: hinge terms on fakes and reals."""
        lam = self._label_lambda()
        logits_fake, p_fake = self.fake_scores(z, z2, cutoff, c_gen, c_fake_D)  # (B, K) each
        logits_real, p_real = self.run_D(real.detach(), c_real)  # (B, K) each
        total = (self._transitional(lambda x: F.relu(1 + x), logits_fake, p_fake, lam)
                 + self._transitional(lambda x: F.relu(1 - x), logits_real, p_real, lam))
        total.backward()
        return {"loss_D": total.detach(), "D_fake": logits_fake.detach().mean(), "D_real": logits_real.detach().mean(),
                "sign_real": logits_real.detach().sign().mean()}  # ADA's r_t over the patches
