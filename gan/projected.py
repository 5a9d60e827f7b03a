"""The projected discriminator (Projected GAN, Sauer, Chitta, Mueller, Geiger, NeurIPS 2021): D judges images in the
feature space of a frozen ImageNet network, so a generator learns from the first image what shapes and parts look
like, instead of D learning that from scratch on a few thousand emoji.

    img (B, 3, R, R) in [-1, 1] --resize to input_res (optional)--> EfficientNet-Lite0 (frozen, gan/efficientnet.py)
      -> 4 levels (24, 40, 112, 320 ch at 1/4 .. 1/32)
      -> CCM: fixed random 1x1 convs per level (cross-channel mixing) -> 64, 128, 256, 512 ch
      -> CSM: fixed random fusion from the deepest level up, out = conv1x1(upsample2x(level + deeper)), so each level
         also sees the coarser ones (cross-scale mixing) -> 64, 64, 128, 256 ch at 1/2 .. 1/16
      -> 4 trained heads (spectral-norm down blocks to 8x8, then a 4x4 conv): per-patch logits, concatenated (B, K)

Only the heads (and, for labelled models, the label embedding) train. The random projections are fixed at
construction and saved with the heads (they are part of what the heads learned to read); the pretrained network is
not saved: it is the package's, loaded again on construction. Labelled models score a projection term per patch,
<out_c(h), cmap(c)> / sqrt(cmap_dim), with out_c starting at zero (the residual D's transitional scheme).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from gan.config import ModelConfig
from gan.efficientnet import FEATURE_CHANNELS, load_efficientnet_lite0
from gan.networks import LabelEmbedding, parent_indices

CCM_CHANNELS = (64, 128, 256, 512)  # CCM output per level ("expand": 64 * 2**level)
CSM_CHANNELS = (64, 64, 128, 256)  # CSM output per level: halves the channels, the shallowest keeps 64
HEAD_CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32}  # head width by feature map size
CMAP_DIM = 64  # width of the label embedding each head projects onto


class DownBlock(nn.Sequential):
    """Separable spectral-norm conv 4x4 / 2 (depthwise, then 1x1), BatchNorm, LeakyReLU 0.2: halves the size."""

    def __init__(self, cin: int, cout: int):
        super().__init__(spectral_norm(nn.Conv2d(cin, cin, 4, 2, 1, groups=cin, bias=False)),
                         spectral_norm(nn.Conv2d(cin, cout, 1, bias=False)), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class Head(nn.Module):
    """A feature map (B, C, S, S) -> per-patch logits (B, P): down blocks to 8x8 (none from 4 or 8), then a 4x4 conv."""

    def __init__(self, channels: int, size: int, conditional: bool):
        super().__init__()
        blocks, c = [], channels
        while size > 8:
            blocks.append(DownBlock(c, HEAD_CHANNELS.get(size // 2, 32)))
            c, size = HEAD_CHANNELS.get(size // 2, 32), size // 2
        self.body = nn.Sequential(*blocks)
        k = min(4, size)  # a 4x4 map gives one logit, an 8x8 map 5x5 patches
        self.out = spectral_norm(nn.Conv2d(c, 1, k, bias=False))
        self.out_c = nn.Conv2d(c, CMAP_DIM, k, bias=False) if conditional else None
        if self.out_c is not None:
            nn.init.zeros_(self.out_c.weight)  # a new label head leaves every score as it was

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(x)
        u = self.out(h).flatten(1)  # (B, P)
        if cmap is None or self.out_c is None:
            return u, None
        proj = (self.out_c(h) * cmap[:, :, None, None]).sum(1).flatten(1) / math.sqrt(CMAP_DIM)  # (B, P)
        return u, proj


class ProjectedDiscriminator(nn.Module):
    """img (B, 3, R, R) -> (unconditional per-patch logits (B, K), projection terms (B, K) or None)."""

    def __init__(
        self,
        cfg: ModelConfig,  # the model (resolution, labels)
        input_res: int = 0,  # resize images to this size before the feature network (0: the model's resolution)
    ):
        super().__init__()
        self.cfg, self.c_dim = cfg, cfg.c_dim
        self.input_res = input_res or cfg.resolution
        if self.input_res < 32:
            raise ValueError(f"the projected discriminator needs images of at least 32 px, got {self.input_res}")
        self.backbone = load_efficientnet_lite0()  # frozen; left out of state_dict (see _drop_backbone)
        # Fixed random projections: initialised from the caller's torch seed, never trained, saved with the heads.
        self.ccm = nn.ModuleList(nn.Conv2d(cin, cout, 1) for cin, cout in zip(FEATURE_CHANNELS, CCM_CHANNELS))
        self.csm = nn.ModuleList(nn.Conv2d(CCM_CHANNELS[i], CSM_CHANNELS[i], 1) for i in range(4))
        sizes = [self.input_res // 2 ** (i + 1) for i in range(4)]  # after CSM: 1/2, 1/4, 1/8, 1/16 of the input
        self.heads = nn.ModuleList(Head(CSM_CHANNELS[i], sizes[i], cfg.c_dim > 0) for i in range(4))
        if cfg.c_dim > 0:
            self.c_embed = LabelEmbedding(cfg.c_dim, CMAP_DIM, parent_indices(cfg))  # labels (+ parents), as G's
        for m in (self.backbone, self.ccm, self.csm):
            m.requires_grad_(False)
        self._register_state_dict_hook(_drop_backbone)
        self.register_load_state_dict_post_hook(_backbone_not_missing)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The heads and the label embedding: what the optimizer moves."""
        extra = list(self.c_embed.parameters()) if self.c_dim else []
        return list(self.heads.parameters()) + extra

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img (B, 3, R, R) -> the four projected levels [(B, 64, S/2, S/2), (B, 64, S/4, ..), (B, 128, S/8, ..),
        (B, 256, S/16, ..)] for S = input_res."""
        if img.shape[-1] != self.input_res:
            img = F.interpolate(img, size=(self.input_res, self.input_res), mode="bilinear", align_corners=False)
        levels = [ccm(f) for ccm, f in zip(self.ccm, self.backbone.features(img))]  # CCM_CHANNELS, 1/4 .. 1/32
        out, deeper = [None] * 4, None
        for i in (3, 2, 1, 0):  # CSM, from the deepest level up
            x = levels[i] if deeper is None else levels[i] + deeper
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            out[i] = deeper = self.csm[i](x)
        return out

    def logits(self, img: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        R = self.cfg.resolution
        assert img.ndim == 4 and img.shape[1:] == (3, R, R), f"expected img (B, 3, {R}, {R}), got {tuple(img.shape)}"
        cmap = None
        if c is not None:
            assert self.c_dim > 0 and c.shape == (img.shape[0], self.c_dim), f"expected c ({img.shape[0]}, {self.c_dim})"
            cmap = F.leaky_relu(self.c_embed(c.to(self.c_embed.weight.dtype)), 0.2)  # (B, CMAP_DIM)
        scores = [head(x, cmap) for head, x in zip(self.heads, self.features(img))]
        u = torch.cat([s[0] for s in scores], dim=1)  # (B, K)
        return u, None if cmap is None else torch.cat([s[1] for s in scores], dim=1)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img -> per-patch logits (B, K): the unconditional ones, plus the projection term when c is given."""
        u, proj = self.logits(img, c)
        return u if proj is None else u + proj


def _drop_backbone(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    for k in [k for k in state if k.startswith(prefix + "backbone.")]:
        del state[k]


def _backbone_not_missing(module: nn.Module, keys) -> None:
    keys.missing_keys[:] = [k for k in keys.missing_keys if "backbone." not in k]
