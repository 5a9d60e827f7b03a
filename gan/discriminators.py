"""Discriminator kinds: each is a (D network, loss) pair, chosen by `TrainConfig.d_kind` and recorded in checkpoints.

    stylegan2   the residual StyleGAN2 D (gan/networks.py), non-saturating logistic loss + lazy R1 (StyleGAN2Loss)
    projected   frozen ImageNet EfficientNet-Lite0 features, fixed random projections and four small trained heads
                (gan/projected.py), hinge loss (HingeLoss)

Adding a kind is a new file with its network plus one `KINDS` entry: the training loop only ever builds a D, asks
which of its parameters train, and makes its loss here. A checkpoint records `{"discriminator": spec}` in its
metadata so that loading rebuilds the D it holds (files without the key hold a stylegan2 D).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gan.config import D_KINDS, ModelConfig, TrainConfig
from gan.loss import GANLoss, HingeLoss, StyleGAN2Loss
from gan.networks import Discriminator, Generator


@dataclass(frozen=True)
class DiscriminatorSpec:
    """What it takes to rebuild a D: its kind and the kind's options (stored in checkpoint metadata)."""

    kind: str = "stylegan2"  # one of D_KINDS
    input_res: int = 0  # projected: resize images to this size before the feature network (0: the model's size)

    def __post_init__(self) -> None:
        if self.kind not in D_KINDS:
            raise ValueError(f"discriminator kind must be one of {D_KINDS}, got {self.kind!r}")

    @staticmethod
    def of_config(cfg: TrainConfig) -> "DiscriminatorSpec":
        return DiscriminatorSpec(cfg.d_kind, cfg.d_input_res if cfg.d_kind == "projected" else 0)

    @staticmethod
    def of_meta(meta: dict[str, Any]) -> "DiscriminatorSpec":
        return DiscriminatorSpec(**meta.get("discriminator", {}))

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def of_module(D: torch.nn.Module) -> "DiscriminatorSpec":
        """The spec that rebuilds D (what a checkpoint holding D records)."""
        if isinstance(D, Discriminator):
            return DiscriminatorSpec("stylegan2")
        return DiscriminatorSpec("projected", D.input_res)


def _stylegan2_trainable(D: torch.nn.Module, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """Every parameter but those of the `freeze_d_blocks` highest-resolution blocks (FreezeD)."""
    if cfg.freeze_d_blocks > len(D.blocks):
        raise ValueError(f"freeze_d_blocks={cfg.freeze_d_blocks} but D has only {len(D.blocks)} blocks")
    frozen = tuple(f"blocks.{i}." for i in range(cfg.freeze_d_blocks))
    return [p for n, p in D.named_parameters() if not n.startswith(frozen)]


def _stylegan2_loss(G: Generator, D: torch.nn.Module, augment: Callable, cfg: TrainConfig, **kw: Any) -> GANLoss:
    return StyleGAN2Loss(G, D, augment, cfg.r1_gamma, cfg.r1_interval, **kw)


def _build_projected(model_cfg: ModelConfig, spec: DiscriminatorSpec) -> torch.nn.Module:
    from gan.projected import ProjectedDiscriminator  # imports the pretrained network's package only when asked

    # The feature network needs at least 32 px (its deepest level is 1/32): smaller models are upsampled to 32.
    return ProjectedDiscriminator(model_cfg, input_res=spec.input_res or max(model_cfg.resolution, 32))


def _projected_trainable(D: torch.nn.Module, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    return D.trainable_parameters()  # the heads (and label embedding); features and projections stay frozen


@dataclass(frozen=True)
class Kind:
    build: Callable[[ModelConfig, DiscriminatorSpec], torch.nn.Module]  # a fresh D
    trainable: Callable[[torch.nn.Module, TrainConfig], list[torch.nn.Parameter]]  # the parameters its optimizer moves
    loss: Callable[..., GANLoss]  # (G, D, augment, cfg, amp_dtype=, source_G=, cdc_weight=) -> its loss


KINDS: dict[str, Kind] = {
    "stylegan2": Kind(lambda m, s: Discriminator(m), _stylegan2_trainable, _stylegan2_loss),
    "projected": Kind(_build_projected, _projected_trainable, lambda G, D, aug, cfg, **kw: HingeLoss(G, D, aug, **kw)),
}


def build_discriminator(model_cfg: ModelConfig, spec: DiscriminatorSpec) -> torch.nn.Module:
    return KINDS[spec.kind].build(model_cfg, spec)


def trainable_parameters(D: torch.nn.Module, spec: DiscriminatorSpec, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    return KINDS[spec.kind].trainable(D, cfg)


def make_loss(spec: DiscriminatorSpec, G: Generator, D: torch.nn.Module, augment: Callable, cfg: TrainConfig,
              **kw: Any) -> GANLoss:
    return KINDS[spec.kind].loss(G, D, augment, cfg, **kw)
