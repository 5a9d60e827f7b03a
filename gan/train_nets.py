"""Building what a run trains: G, its EMA copy, D, which parameters train, and their optimizers.

Fine-tuning starts G and G_ema from the parent's G_ema (few-shot practice) and keeps the parent's D when it is of the
configured kind; otherwise (another kind, or a checkpoint without D, e.g. an imported model) D starts fresh.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from gan.checkpoint import Checkpoint
from gan.config import ModelConfig, TrainConfig
from gan.discriminators import DiscriminatorSpec, build_discriminator, trainable_parameters
from gan.networks import Generator

# The label embedding and projection stay trainable when the mapping is frozen: they are how a conditional model
# learns what a label means.
LABEL_PARTS = ("mapping_net.embed.", "mapping_net.label_proj.")


@dataclass
class Networks:
    G: Generator  # the generator being trained
    G_ema: Generator  # its moving average, what samples and exports show
    D: torch.nn.Module  # the discriminator being trained (kind: d_spec)
    d_spec: DiscriminatorSpec
    g_params: list[torch.nn.Parameter]  # what opt_G moves (the freezing policy applied)
    d_params: list[torch.nn.Parameter]  # what opt_D moves
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer


def trainable_g_parameters(G: Generator, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """G's parameters minus the frozen ones: the mapping (freeze_mapping, labels excepted), the features of the
    `freeze_g_blocks` lowest synthesis blocks (their toRGB still trains), and with g_parts='styles' every conv kernel."""
    if not 0 <= cfg.freeze_g_blocks <= len(G.synthesis_net.blocks):
        raise ValueError(f"freeze_g_blocks={cfg.freeze_g_blocks} but G has {len(G.synthesis_net.blocks)} synthesis blocks")
    frozen_g = tuple(f"synthesis_net.blocks.{i}." for i in range(cfg.freeze_g_blocks))

    def trains(n: str) -> bool:
        if n.startswith("mapping_net."):
            return not cfg.freeze_mapping or n.startswith(LABEL_PARTS)
        if n.startswith(frozen_g) and ".torgb." not in n:
            return False
        return cfg.g_parts == "all" or ".affine." in n or ".torgb." in n or n.endswith(".bias")

    return [p for n, p in G.named_parameters() if trains(n)]


def build_networks(model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, init: Checkpoint | None) -> Networks:
    """Fresh networks (seeded by the caller), or a fine-tune's / warm start's from `init`, on `device`, all frozen
    (a phase turns requires_grad on for its own parameters), with fused Adam over the trainable ones."""
    spec = DiscriminatorSpec.of_config(cfg)
    if init is None:
        G = Generator(model_cfg)
        G_ema = copy.deepcopy(G)
    else:
        G = copy.deepcopy(init.G_ema)  # few-shot practice: start G from G_ema
        G_ema = copy.deepcopy(init.G_ema)
    if init is not None and init.D is not None and DiscriminatorSpec.of_meta(init.meta) == spec:
        D = copy.deepcopy(init.D)
    elif init is not None and spec.kind == "stylegan2":
        raise ValueError("fine-tuning with the StyleGAN2 discriminator needs a checkpoint that holds one (D.*); "
                         "the projected discriminator starts fresh and needs none")
    else:
        D = build_discriminator(model_cfg, spec)
    for m in (G, D, G_ema):
        m.to(device).train().requires_grad_(False)
    # channels_last (NHWC) conv weights in the trained G and D: +12 % images/s on 2 CPU cores (oneDNN's NHWC
    # kernels; the real batch is NHWC already, uint8 HWC rows permuted). G_ema keeps the layout every loaded
    # checkpoint has, so it renders bit for bit what its export renders. Not measured on CUDA, so not used there.
    if device.type == "cpu":
        for m in (G, D):
            m.to(memory_format=torch.channels_last)
    G_ema.eval()
    g_params, d_params = trainable_g_parameters(G, cfg), trainable_parameters(D, spec, cfg)
    # Fused Adam everywhere: one kernel for all parameters with the step counters on the device (the default
    # Adam reads each counter back for its bias correction: a sync per parameter on a GPU). On 2 CPU cores it
    # also measured 21 ms per G+D update against 90 ms for the default per-tensor loop (68 ms foreach).
    adam = dict(betas=tuple(float(b) for b in cfg.betas), eps=1e-8, fused=True)
    return Networks(G, G_ema, D, spec, g_params, d_params, torch.optim.Adam(g_params, lr=cfg.lr_g, **adam),
                    torch.optim.Adam(d_params, lr=cfg.lr_d, **adam))
