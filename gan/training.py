"""The one training engine, for training from scratch and for fine-tuning: the run state and the loop.

`train()` is a generator of `TrainEvent`s (one per step, plus sample grids, checkpoints and the end), so a CLI
progress bar and a live web page consume the same stream. Setting the `stop` event ends the run cleanly at the
next step boundary (the next log step when several processes train together), after writing the run state.

The losses live in gan/loss.py (`StyleGAN2Loss`, phases Dmain / Dreg / Dboth / Gmain); this file holds what a run
must carry between steps (networks, optimizers, counters, augment p, RNG states), its persistence (save / load /
warm_start) and the loop. Recipe: non-saturating logistic loss, lazy R1 on reals every `r1_interval` steps, style
mixing, G EMA with ramp-up, DiffAugment (same ops on real and fake, in both steps) with an ADA-adapted p.
Path-length regularisation is off, as in SG2-ADA's low-resolution `cifar` config.

A step never waits for the GPU. Randoms (data order, latents, mixing cutoffs, flips, augmentation) are drawn by
generators on the device; the dataset is uploaded once as uint8; loss and D statistics are summed on the device and
read once per `log_every` steps; ADA adapts p on the device; EMA is one `_foreach_lerp_`; Adam is fused.

The non-finite guard ("saved weights are always the last good ones") has two forms:
  * host guard (the CPU): each phase's loss is read before its optimizer step, which costs nothing on a CPU, and a
    non-finite loss stops the run before the weights change (the shipped behaviour);
  * device guard (`sync_free`, CUDA): the summed losses are checked at every log step, and the whole state
    (weights, Adam, buffers, p, counters) is rolled back to an in-memory copy taken at the previous good check.
    Rolling back keeps the contract exactly (a run that diverged stops, with the last good weights saved) at the
    price of a device-to-device copy per log step and at most `log_every` steps of lost work. SG2-ADA instead
    replaces non-finite gradients by zeros (`nan_to_num`), which never stops a diverged run and would save
    weights trained on garbage: that breaks the contract, so it is not used.

Data parallel (gan/distributed.py, torchrun): each rank trains on cfg.batch // world_size images. Data order,
latents, flips and mixing come from one stream that every rank draws for the whole global batch before taking its
own slice, so a run is the same whatever the number of ranks (a state saved by 2 ranks resumes on 1 with the same
data); augmentation and G's noise inputs use per-rank streams. Gradients and ADA's statistic are all-reduced.

Run folder layout (`run_dir`, written by rank 0 only):
    state.safetensors   G, G_ema, D, both Adam states, augment p, step, images seen, RNG states (resume point)
    log.jsonl           one JSON line per `log_every` steps (losses, p, img/s); cut back to the state on resume
    samples/NNNNNN.png  fixed-seed sample grids
"""
from __future__ import annotations

import copy
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from gan.augment import augment, parse_policy
from gan.checkpoint import Checkpoint, load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from gan.config import ModelConfig, TrainConfig, from_dict, to_dict
from gan.dataset import ImageDataset
from gan.runtime import default_noise_mode, hardware_name
from gan.distributed import Distributed
from gan.images import to_uint8_grid
from gan.io import atomic_write_text
from gan.labels import any_c_table, dataset_c, has_labels, seeds_c
from gan.latent import z_from_seeds
from gan.loss import StyleGAN2Loss
from gan.networks import Discriminator, Generator

G_PARTS = ("all", "styles")  # TrainConfig.g_parts
STAT_KEYS = ("loss_G", "loss_D", "D_real", "D_fake", "sign_real", "r1", "cdc")  # statistics summed on the device
PHASE_NAMES = {"Gmain": "generator", "Dmain": "discriminator", "Dboth": "discriminator", "Dreg": "discriminator"}


@dataclass
class TrainEvent:
    kind: str  # 'step', 'sample', 'checkpoint', 'done', 'stopped' or 'error'
    step: int  # optimisation steps done
    nimg: int  # real images shown to D so far
    losses: dict[str, float] = field(default_factory=dict)  # means since the last log step: loss_G, loss_D, r1, D_real, D_fake, sign_real
    aug_p: float = 0.0  # augmentation probability (as of the last log step)
    img_per_s: float = 0.0  # throughput over the last log window
    eta_s: float | None = None  # estimated seconds to the end
    grid: np.ndarray | None = None  # (H, W, 3) uint8 sample grid of G_ema at fixed seeds ('sample' events)
    message: str = ""  # human-readable note (errors, where a checkpoint went)
    path: str | None = None  # checkpoint written ('checkpoint', 'done', 'stopped')


def _rank_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A distinct seed per (run seed, restart step, rank, stream), so streams never coincide."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + stream * 15_485_863) % (2**63)


class TrainState:
    """Everything a run needs to continue: networks, optimizers, counters, augment p and RNG states."""

    def __init__(
        self,
        model_cfg: ModelConfig,  # the networks' architecture
        cfg: TrainConfig,  # the training recipe and run length
        device: torch.device | str = "cpu",  # where the networks, data and randoms live
        init: Checkpoint | None = None,  # start from this checkpoint's G_ema and D (fine-tuning, warm start)
        dist: Distributed | None = None,  # this process's place in a data-parallel job (None: alone)
        sync_free: bool | None = None,  # never read the device inside a step (None: on CUDA and with several ranks)
    ):
        self.model_cfg, self.cfg = model_cfg, cfg
        self.device = torch.device(device)
        self.dist = dist or Distributed()
        parse_policy(cfg.aug_policy)
        if cfg.augment not in ("ada", "fixed", "none"):
            raise ValueError(f"augment must be 'ada', 'fixed' or 'none', got {cfg.augment!r}")
        if cfg.batch % self.dist.world_size:
            raise ValueError(f"batch {cfg.batch} does not split evenly over {self.dist.world_size} processes")
        self.batch_local = cfg.batch // self.dist.world_size  # images per step on this rank
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        if init is None:
            self.G = Generator(model_cfg)
            self.D = Discriminator(model_cfg)
            self.G_ema = copy.deepcopy(self.G)
            self.parent = None
        else:
            if init.D is None:
                raise ValueError("fine-tuning needs a checkpoint with a discriminator (D.*)")
            self.G = copy.deepcopy(init.G_ema)  # few-shot practice: start G from G_ema
            self.G_ema = copy.deepcopy(init.G_ema)
            self.D = copy.deepcopy(init.D)
            self.parent = {"sha256": init.sha256, "path": str(init.path) if init.path else None, "nimg": init.meta.get("nimg")}
        self.grid_noise_mode = default_noise_mode(init.meta) if init is not None else "const"
        for m in (self.G, self.D, self.G_ema):
            m.to(self.device).train().requires_grad_(False)
        # channels_last (NHWC) conv weights in the trained G and D: +12 % images/s on 2 CPU cores (oneDNN's NHWC
        # kernels; the real batch is NHWC already, uint8 HWC rows permuted). G_ema keeps the layout every loaded
        # checkpoint has, so it renders bit for bit what its export renders. Not measured on CUDA, so not used there.
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            for m in (self.G, self.D):
                m.to(memory_format=torch.channels_last)
        self.G_ema.eval()
        # Trainable parameters (fine-tuning freezes the mapping network and the highest-resolution D blocks). The
        # label embedding and projection stay trainable: they are how a conditional model learns what a label means.
        label_parts = ("mapping_net.embed.", "mapping_net.label_proj.")
        if cfg.g_parts not in G_PARTS:
            raise ValueError(f"g_parts must be one of {G_PARTS}, got {cfg.g_parts!r}")

        if not 0 <= cfg.freeze_g_blocks <= len(self.G.synthesis_net.blocks):
            raise ValueError(f"freeze_g_blocks={cfg.freeze_g_blocks} but G has {len(self.G.synthesis_net.blocks)} synthesis blocks")
        frozen_g = tuple(f"synthesis_net.blocks.{i}." for i in range(cfg.freeze_g_blocks))

        def trains(n: str) -> bool:
            if n.startswith("mapping_net."):
                return not cfg.freeze_mapping or n.startswith(label_parts)
            if n.startswith(frozen_g) and ".torgb." not in n:
                return False
            return cfg.g_parts == "all" or ".affine." in n or ".torgb." in n or n.endswith(".bias")

        self.g_params = [p for n, p in self.G.named_parameters() if trains(n)]
        frozen_d = {f"blocks.{i}." for i in range(cfg.freeze_d_blocks)}
        if cfg.freeze_d_blocks > len(self.D.blocks):
            raise ValueError(f"freeze_d_blocks={cfg.freeze_d_blocks} but D has only {len(self.D.blocks)} blocks")
        self.d_params = [p for n, p in self.D.named_parameters() if not any(n.startswith(f) for f in frozen_d)]
        # A CPU reads its own values for free; on a GPU every read drains the queue, so the step reads nothing.
        # Ranks of a data-parallel job also use the device guard: it decides at log steps, on all-reduced values,
        # so every rank rolls back together instead of one rank stopping while the others wait in an all-reduce.
        self.sync_free = sync_free if sync_free is not None else (self.device.type != "cpu" or self.dist.enabled)
        # Fused Adam everywhere: one kernel for all parameters with the step counters on the device (the default
        # Adam reads each counter back for its bias correction: a sync per parameter on a GPU). On 2 CPU cores it
        # also measured 21 ms per G+D update against 90 ms for the default per-tensor loop (68 ms foreach).
        adam = dict(betas=tuple(float(b) for b in cfg.betas), eps=1e-8, fused=True)
        self.opt_G = torch.optim.Adam(self.g_params, lr=cfg.lr_g, **adam)
        self.opt_D = torch.optim.Adam(self.d_params, lr=cfg.lr_d, **adam)
        use_amp = cfg.mixed_precision if cfg.mixed_precision is not None else self.device.type == "cuda"
        # Distance consistency (few-shot fine-tuning) compares G with a frozen copy of where it started.
        source_G = copy.deepcopy(self.G_ema).eval() if cfg.cdc_weight > 0 and init is not None else None
        self.loss = StyleGAN2Loss(self.G, self.D, self._augment, cfg.r1_gamma, cfg.r1_interval,
                                  amp_dtype=torch.bfloat16 if use_amp else None, source_G=source_G,
                                  cdc_weight=cfg.cdc_weight)
        self.step = 0
        self.nimg = 0
        self.wall_s = 0.0
        # A fine-tuned conditional model keeps its parent's label counts and groups (what its pickers show).
        self.meta: dict[str, Any] = {"label_info": init.meta["label_info"]} if init is not None and "label_info" in init.meta else {}
        self._aug_p = torch.tensor(float(cfg.aug_p) if cfg.augment != "none" else 0.0, device=self.device)  # 0-dim fp32
        self._aug_p_host: float | None = float(cfg.aug_p) if cfg.augment != "none" else 0.0  # None: changed, unread
        self._aug_p_seen = self._aug_p_host or 0.0  # last value read (what events report)
        self._seed_streams(step=0, shared=True)
        # EMA and rollback work on flat lists of tensors (one foreach call each instead of one call per tensor).
        self._ema_params, self._g_all_params = list(self.G_ema.parameters()), list(self.G.parameters())
        self._ema_buffers, self._g_buffers = list(self.G_ema.buffers()), list(self.G.buffers())
        self._acc = {k: torch.zeros([], device=self.device) for k in STAT_KEYS}  # sums since the last read
        self._acc_n = dict.fromkeys(STAT_KEYS, 0)  # how many steps each sum holds (host-side)
        self._sign_sum = torch.zeros([], device=self.device)  # sum of sign(D(real)) since the last ADA adjustment
        self._sign_n = 0
        self._good: dict[str, Any] | None = None  # the device guard's copy of the last checked state
        self._data: tuple[ImageDataset, torch.Tensor] | None = None  # (dataset, its images on the device)
        self._labels: tuple | None = None  # (dataset, its c (N, c_dim) or None, the table the fakes' c come from)
        self._row_p: tuple | None = None  # (dataset, (N,) probability of drawing each row), with cfg.balance_by
        self._sync_ranks()

    # ---- randomness -----------------------------------------------------------------------------------------

    def _seed_streams(self, step: int, shared: bool) -> None:
        """(Re)seed the generators. `shared`: also the data/latent stream (identical on every rank)."""
        seed, rank = self.cfg.seed, self.dist.rank
        if shared:
            self.gen = torch.Generator(self.device).manual_seed(seed + step)  # data, latents, flips, mixing
        self.gen_aug = torch.Generator(self.device).manual_seed(_rank_seed(seed, step, rank, 1))  # augmentation
        if rank > 0 or step > 0:  # G's noise inputs use the global RNG; rank 0 of a fresh run continues from init
            torch.manual_seed(_rank_seed(seed, step, rank, 2))

    def _sync_ranks(self) -> None:
        """Make every rank start from rank 0's weights (identical already when seeded alike; this makes sure)."""
        if self.dist.enabled:
            self.dist.broadcast_([t for m in (self.G, self.G_ema, self.D) for t in m.state_dict().values()])

    def _slice(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global-batch tensor (B, ...) -> (B / world_size, ...)."""
        b = self.batch_local
        return t[self.dist.rank * b : (self.dist.rank + 1) * b]

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """z (b, z_dim), and for style mixing a second z2 and a 0-dim cutoff layer (num_ws: no mixing this batch)."""
        B, zd = self.cfg.batch, self.model_cfg.z_dim
        z = self._slice(torch.randn(B, zd, generator=self.gen, device=self.device))
        if self.cfg.style_mixing <= 0:
            return z, None, None
        z2 = self._slice(torch.randn(B, zd, generator=self.gen, device=self.device))
        cutoff = torch.randint(1, self.G.num_ws, [], generator=self.gen, device=self.device)
        mix = torch.rand([], generator=self.gen, device=self.device) < self.cfg.style_mixing  # one draw per batch
        return z, z2, torch.where(mix, cutoff, self.G.num_ws)

    def _device_images(self, dataset: ImageDataset) -> torch.Tensor:
        """The dataset as (N, H, W, 3) uint8 on the device, uploaded once (a CPU 'upload' shares the memory)."""
        if self._data is None or self._data[0] is not dataset:
            self._data = (dataset, torch.from_numpy(np.ascontiguousarray(dataset.images)).to(self.device))
        return self._data[1]

    def _label_tables(self, dataset: ImageDataset) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(the dataset's c (N, c_dim), matched to the model's classes by name, or None for a dataset without the
        model's labels (a user's own images); the table (M, c_dim) the fakes' c are drawn from: the dataset's c, or
        "Any" draws, every class equally often), on the device, built once per dataset."""
        if self._labels is None or self._labels[0] is not dataset:
            real_c = dataset_c(self.model_cfg, dataset).to(self.device) if has_labels(self.model_cfg, dataset) else None
            gen_c = real_c if real_c is not None else any_c_table(self.model_cfg).to(self.device)
            self._labels = (dataset, real_c, gen_c)
        return self._labels[1], self._labels[2]

    def label_batch(self, dataset: ImageDataset, idx: torch.Tensor) -> torch.Tensor | None:
        """c (b, c_dim) of the dataset rows idx (b,); None when the dataset has no labels."""
        c = self._label_tables(dataset)[0]
        return None if c is None else c[idx]

    def _draw_rows(self, dataset: ImageDataset) -> torch.Tensor:
        """This rank's share of a global batch of dataset row indices (b,): every row equally often, or with
        cfg.balance_by, every class of that label equally often (cfg.balance_power of the way)."""
        if self.cfg.balance_by is None:  # drawn as before the option existed, so earlier runs keep their sequence
            return self._slice(torch.randint(len(dataset), (self.cfg.batch,), generator=self.gen, device=self.device))
        if self._row_p is None or self._row_p[0] is not dataset:
            p = dataset.class_weights(self.cfg.balance_by, self.cfg.balance_power)  # (N,)
            self._row_p = (dataset, torch.from_numpy(p).float().to(self.device))
        return self._slice(torch.multinomial(self._row_p[1], self.cfg.batch, replacement=True, generator=self.gen))

    def gen_labels(self, dataset: ImageDataset) -> torch.Tensor:
        """c (b, c_dim) for this rank's fakes: the labels of random dataset rows, drawn as the real images are, so G
        is asked for each class as often as D sees it (SG2-ADA's practice). For a dataset without labels
        (fine-tuning on a user's images), every class equally often: the run teaches all of them the style."""
        real_c, table = self._label_tables(dataset)
        if table is real_c:
            return table[self._draw_rows(dataset)]
        idx = self._slice(torch.randint(len(table), (self.cfg.batch,), generator=self.gen, device=self.device))  # (b,)
        return table[idx]

    def real_batch(self, dataset: ImageDataset, with_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """This rank's batch of real images drawn with replacement, (b, 3, R, R) in [-1, 1]; with cfg.xflip, each
        one is mirrored left-right with probability 0.5 (the dataset, twice over; G learns both orientations).
        with_labels: also their c (b, c_dim)."""
        images = self._device_images(dataset)  # (N, R, R, 3) uint8
        B = self.cfg.batch
        idx = self._draw_rows(dataset)  # (b,)
        real = images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (b, 3, R, R), as gan.images.from_uint8
        if self.cfg.xflip:  # drawn only when on, so runs without it keep their random sequence
            flip = self._slice(torch.rand(B, generator=self.gen, device=self.device) < 0.5).view(-1, 1, 1, 1)
            real = torch.where(flip, real.flip(3), real)
        return (real, self.label_batch(dataset, idx)) if with_labels else real

    def _augment(self, img: torch.Tensor) -> torch.Tensor:
        """DiffAugment with the current p; skipped only when the host knows p is exactly 0 (identity anyway)."""
        if self.cfg.augment == "none" or self._aug_p_host == 0.0:
            return img
        return augment(img, self._aug_p, self.cfg.aug_policy, gen=self.gen_aug)

    @property
    def aug_p(self) -> float:
        """The augmentation probability now (reads the device value: call it between steps, not inside one)."""
        return float(self._aug_p)

    @aug_p.setter
    def aug_p(self, value: float) -> None:
        self._aug_p.fill_(float(value))
        self._aug_p_host = self._aug_p_seen = float(self._aug_p)

    @torch.no_grad()
    def sample_grid(self, seeds: tuple[int, ...] | None = None, psi: float = 1.0) -> np.ndarray:
        """G_ema at fixed seeds (noise as the parent checkpoint recommends, else const) -> (H, W, 3) uint8 grid."""
        seeds = tuple(seeds or self.cfg.grid_seeds)
        z = z_from_seeds(list(seeds), self.model_cfg.z_dim).to(self.device)
        c = seeds_c(self.model_cfg, seeds).to(self.device) if self.model_cfg.c_dim else None  # labels drawn by seed
        img = self.G_ema.synthesis(self.G_ema.mapping(z, c=c, psi=psi), noise_mode=self.grid_noise_mode)
        return to_uint8_grid(img.cpu(), cols=len(seeds) if len(seeds) <= 8 else None)

    # ---- one optimisation step ------------------------------------------------------------------------------

    def _phase(self, phase: str, opt: torch.optim.Optimizer, params: list[torch.Tensor], real: torch.Tensor,
               latents: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
               labels: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """One loss phase: gradients of `params` only, all-reduced over ranks, then one Adam step.
        labels: (c_real, c_gen) for a conditional model."""
        for p in params:
            p.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        c_real, c_gen = labels if labels is not None else (None, None)
        stats = self.loss.accumulate_gradients(phase, real, *latents, c_real=c_real, c_gen=c_gen)
        for p in params:
            p.requires_grad_(False)
        if not self.sync_free:  # host guard: refuse a non-finite loss before the weights change
            for k in ("loss_G", "loss_D", "r1"):
                if k in stats and not math.isfinite(v := float(stats[k])):
                    opt.zero_grad(set_to_none=True)
                    raise FloatingPointError(f"{PHASE_NAMES[phase]} loss is {v} at step {self.step}")
        self.dist.all_reduce_mean_grads(params)
        opt.step()
        for k, v in stats.items():
            self._acc[k] += v
            self._acc_n[k] += 1
        if "sign_real" in stats:
            self._sign_sum += stats["sign_real"]
            self._sign_n += 1

    def train_step(self, dataset: ImageDataset) -> None:
        """One D step (with lazy R1 when due) and one G step, EMA and ADA updates. Reads nothing back on a GPU.

        Statistics accumulate on the device; `read_stats()` returns their means. On the CPU a non-finite loss
        raises FloatingPointError before that phase's optimizer step, so the weights stay the last good ones.
        """
        cfg = self.cfg
        if self.sync_free and self._good is None:  # the device guard needs a copy before the first unchecked step
            self._snapshot()
        conditional = self.model_cfg.c_dim > 0
        labels_D = labels_G = None
        if conditional:  # drawn only for labelled models, so unconditional runs keep their random sequence
            real, c_real = self.real_batch(dataset, with_labels=True)  # (b, 3, R, R) in [-1, 1], (b, c_dim)
            labels_D, labels_G = (c_real, self.gen_labels(dataset)), (c_real, self.gen_labels(dataset))
        else:
            real = self.real_batch(dataset)  # (b, 3, R, R) in [-1, 1]
        do_r1 = cfg.r1_gamma > 0 and cfg.r1_interval > 0 and self.step % cfg.r1_interval == 0
        self._phase("Dboth" if do_r1 else "Dmain", self.opt_D, self.d_params, real, self._latents(), labels_D)
        self._phase("Gmain", self.opt_G, self.g_params, real, self._latents(), labels_G)
        self.step += 1
        self.nimg += cfg.batch
        if conditional:  # the transition: lambda += batch / ramp, up to 1, on the device (G_ema copies it below)
            lam = self.G.mapping_net.label_lambda
            lam.add_(cfg.batch / max(cfg.label_ramp_nimg, 1)).clamp_(max=1.0)

        # -- G EMA, half-life ema_nimg images (ramped up to a fraction of images seen); beta is known on the host
        ema_nimg = cfg.ema_nimg if cfg.ema_rampup is None else min(cfg.ema_nimg, self.nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._g_all_params, 1.0 - beta)  # ema += (1 - beta) (p - ema)
            torch._foreach_copy_(self._ema_buffers, self._g_buffers)

        # -- ADA: move p towards E[sign(D(real))] = target, on the device
        if cfg.augment == "ada" and self.step % cfg.ada_interval == 0 and self._sign_n > 0:
            mean_sign = self.dist.all_reduce_sum_(self._sign_sum) / (self._sign_n * self.dist.world_size)
            adjust = torch.sign(mean_sign - cfg.ada_target) * (cfg.batch * cfg.ada_interval / (cfg.ada_kimg * 1000))
            self._aug_p.copy_((self._aug_p + adjust).clamp(0.0, 1.0))
            self._sign_sum.zero_()
            self._sign_n = 0
            self._aug_p_host = None if self.sync_free else float(self._aug_p)
            if self._aug_p_host is not None:
                self._aug_p_seen = self._aug_p_host

    def read_stats(self, flags: tuple[float, ...] = ()) -> tuple[dict[str, float], list[float]]:
        """Means of the statistics since the last read, and `flags` summed over ranks (one sync, one all-reduce).

        The device guard lives here: a non-finite mean rolls the state back to the copy taken at the previous
        good read and raises FloatingPointError; a finite one refreshes that copy.
        """
        world = self.dist.world_size
        vec = torch.stack([self._acc[k] for k in STAT_KEYS] + [self._aug_p])  # (len(STAT_KEYS) + 1,)
        if self.dist.enabled:
            vec = torch.cat([vec, torch.tensor(flags, dtype=torch.float32, device=self.device)])
            self.dist.all_reduce_sum_(vec)
            vec[len(STAT_KEYS)] /= world  # p is the same on every rank
        host = vec.tolist()  # the one host<->device sync of a log step
        means = {k: host[i] / (self._acc_n[k] * world) for i, k in enumerate(STAT_KEYS) if self._acc_n[k]}
        out_flags = host[len(STAT_KEYS) + 1 :] if self.dist.enabled else list(flags)
        self._aug_p_host = self._aug_p_seen = host[len(STAT_KEYS)]
        for t in self._acc.values():
            t.zero_()
        self._acc_n = dict.fromkeys(STAT_KEYS, 0)
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        if bad:
            good_step = self._rollback()
            what = ", ".join(f"{k} {v}" for k, v in bad.items())
            raise FloatingPointError(f"non-finite loss ({what}) after step {good_step}; weights rolled back to step {good_step}")
        if self.sync_free:
            self._snapshot()
        return means, out_flags

    # ---- the device guard's in-memory copy ------------------------------------------------------------------

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a step changes, by a stable name (state_dict tensors share storage with the modules)."""
        out = {f"{name}.{k}": v for name, m in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)) for k, v in m.state_dict().items()}
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            for i, p in enumerate(opt.param_groups[0]["params"]):
                for k, v in opt.state.get(p, {}).items():
                    if torch.is_tensor(v):
                        out[f"{name}.{i}.{k}"] = v
        out["aug_p"] = self._aug_p
        return out

    def _snapshot(self) -> None:
        cur = self._state_tensors()
        if self._good is not None and self._good["tensors"].keys() == cur.keys():
            torch._foreach_copy_(list(self._good["tensors"].values()), list(cur.values()))  # device-to-device
        else:
            self._good = {"tensors": {k: v.detach().clone() for k, v in cur.items()}}
        self._good.update(step=self.step, nimg=self.nimg)

    def _rollback(self) -> int:
        """Restore the last good copy (device guard); on the CPU the host guard already kept the weights."""
        if not self.sync_free or self._good is None:
            return self.step
        good, cur = self._good["tensors"], self._state_tensors()
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):  # Adam state born after the copy: drop it
            for i, p in enumerate(opt.param_groups[0]["params"]):
                if any(k.startswith(f"{name}.{i}.") and k not in good for k in cur):
                    opt.state.pop(p, None)
        with torch.no_grad():
            for k, v in good.items():
                cur[k].copy_(v)
        self.step, self.nimg = self._good["step"], self._good["nimg"]
        self._sign_sum.zero_()
        self._sign_n = 0
        self._aug_p_host = self._aug_p_seen = float(self._aug_p)
        return self.step

    def is_done(self) -> bool:
        if self.cfg.steps is not None:
            return self.step >= self.cfg.steps
        return self.nimg >= self.cfg.total_nimg

    def remaining_images(self) -> int:
        if self.cfg.steps is not None:
            return max(self.cfg.steps - self.step, 0) * self.cfg.batch
        return max(self.cfg.total_nimg - self.nimg, 0)

    # ---- persistence ----------------------------------------------------------------------------------------

    def save(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write the run state (call on rank 0; every rank holds the same weights)."""
        extra = optimizer_to_tensors("opt_G", self.opt_G, self.G)
        extra.update(optimizer_to_tensors("opt_D", self.opt_D, self.D))
        extra["rng.gen"] = self.gen.get_state()
        extra["rng.gen_aug"] = self.gen_aug.get_state()
        extra["rng.torch_cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            extra["rng.torch_cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            **self.meta, "train": to_dict(self.cfg), "step": self.step, "nimg": self.nimg, "aug_p": self.aug_p,
            "wall_s": round(self.wall_s, 1), "parent": self.parent,
            "hardware": hardware_name(self.device), "world_size": self.dist.world_size, "rng_device": self.device.type,
            "torch": torch.__version__, **(extra_meta or {}),
        }
        return save_checkpoint(path, self.model_cfg, self.G_ema, self.G, self.D, meta=meta, extra=extra)

    def _restore_rng(self, extra: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """The shared stream resumes exactly whenever the device type matches; the per-rank streams only when one
        process continues a one-process run on the same device type; else they are reseeded from the step."""
        same_device = meta.get("rng_device", "cpu") == self.device.type
        try:
            if not same_device:
                raise ValueError("generator states of another device type")
            self.gen.set_state(extra["rng.gen"])
        except (KeyError, RuntimeError, ValueError):
            self.gen.manual_seed(self.cfg.seed + self.step)
        alone = same_device and self.dist.world_size == 1 and int(meta.get("world_size", 1)) == 1
        if alone and "rng.gen_aug" in extra:
            self.gen_aug.set_state(extra["rng.gen_aug"])
            if "rng.torch_cpu" in extra:
                torch.set_rng_state(extra["rng.torch_cpu"])
            if "rng.torch_cuda" in extra and self.device.type == "cuda":
                torch.cuda.set_rng_state(extra["rng.torch_cuda"], self.device)
        else:
            self._seed_streams(self.step, shared=False)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", cfg: TrainConfig | None = None,
             dist: Distributed | None = None) -> "TrainState":
        """Resume from a state written by `save` (optionally with a changed TrainConfig, e.g. a longer run), with
        any number of ranks."""
        ck = load_checkpoint(path, need_d=True)
        if ck.G is None:
            raise ValueError(f"{path} holds no G; it is not a run state")
        saved_cfg = from_dict(TrainConfig, ck.meta["train"])
        st = cls(ck.model_cfg, cfg or saved_cfg, device=device, dist=dist)
        st.G.load_state_dict(ck.G.state_dict())
        st.G_ema.load_state_dict(ck.G_ema.state_dict())
        st.D.load_state_dict(ck.D.state_dict())
        optimizer_from_tensors("opt_G", st.opt_G, st.G, ck.extra)
        optimizer_from_tensors("opt_D", st.opt_D, st.D, ck.extra)
        st.step, st.nimg = int(ck.meta["step"]), int(ck.meta["nimg"])
        st.aug_p = float(ck.meta.get("aug_p", 0.0))
        st.wall_s = float(ck.meta.get("wall_s", 0.0))
        st.parent = ck.meta.get("parent")
        st._restore_rng(ck.extra, ck.meta)
        st._carry_history(ck.meta, saved_cfg)
        return st

    @classmethod
    def warm_start(cls, ck: Checkpoint, cfg: TrainConfig, device: torch.device | str = "cpu",
                   dist: Distributed | None = None) -> "TrainState":
        """Continue a run from exported weights (G_ema + D, e.g. the shipped checkpoint) when its run state is gone.

        G starts from G_ema, as StyleGAN's resume-from-pickle does (or from the checkpoint's G when it holds one,
        e.g. the fp32 files a GPU run returns), and both Adam states start fresh. Images seen, augment p, wall time
        and the run's history carry over; `warm_starts` in the metadata records where it happened, so the card says
        the optimizer state was reset there.
        """
        if "nimg" not in ck.meta or "train" not in ck.meta:
            raise ValueError(f"{ck.path} has no training history (nimg, train); fine-tune it instead of continuing it")
        st = cls(ck.model_cfg, cfg, device=device, init=ck, dist=dist)
        st.parent = ck.meta.get("parent")  # the same run, not a fine-tune of it
        if ck.G is not None:
            st.G.load_state_dict(ck.G.state_dict())
        st.step, st.nimg = int(ck.meta.get("step", 0)), int(ck.meta["nimg"])
        st._seed_streams(st.step, shared=True)  # not a replay of the run's first batches
        st.aug_p = float(ck.meta.get("aug_p", cfg.aug_p)) if cfg.augment != "none" else 0.0
        st.wall_s = float(ck.meta.get("wall_s", 0.0))
        st._carry_history(ck.meta, from_dict(TrainConfig, ck.meta["train"]))
        st.meta["warm_starts"] = [*st.meta.get("warm_starts", []),
                                  {"at_nimg": st.nimg, "from_sha256": ck.sha256,
                                   "reset": "Adam states" if ck.G is not None else "G from G_ema; Adam states"}]
        return st

    def _carry_history(self, meta: dict[str, Any], saved_cfg: TrainConfig) -> None:
        """Keep the run's dataset, surgery and settings history, and note any setting this continuation changes."""
        self.meta = {k: meta[k] for k in ("dataset", "license", "surgery", "label_info", "train_changes", "warm_starts") if k in meta}
        changed = train_config_changes(saved_cfg, self.cfg)
        if changed:  # the run's history says which settings held when, so the card describes the real recipe
            self.meta["train_changes"] = [*self.meta.get("train_changes", []), {"at_nimg": self.nimg, "changed": changed}]


# ----------------------------------------------------------------------------------------------------------------
# The loop


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after the state we resume from, so the curve continues without a fork."""
    if not log_path.exists():
        return
    keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_text(log_path, "".join(ln + "\n" for ln in keep))


def train(
    state: TrainState,
    dataset: ImageDataset,
    run_dir: str | Path | None = None,
    stop: threading.Event | None = None,
) -> Iterator[TrainEvent]:
    """Run until the configured length, a stop request, or a non-finite loss. Yields TrainEvents.

    Every rank of a data-parallel job runs this loop; only rank 0 writes to `run_dir` and renders samples.
    Decisions that depend on a clock or a signal (stop, the *_every_s cadences) are taken at log steps and agreed
    across ranks, so every rank takes the same branch.
    """
    cfg = state.cfg
    if dataset.resolution != state.model_cfg.resolution:
        raise ValueError(f"dataset is {dataset.resolution}px but the model makes {state.model_cfg.resolution}px images")
    if cfg.balance_by is not None:
        dataset.class_weights(cfg.balance_by, cfg.balance_power)  # a label the dataset lacks fails here, not mid-run
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    main = state.dist.is_main
    state.meta.setdefault("dataset", dataset.name)
    state.meta.setdefault("license", dataset.license)
    run_dir = Path(run_dir) if run_dir and main else None
    log_f = None
    if run_dir:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        _truncate_log(run_dir / "log.jsonl", state.step)
        log_f = open(run_dir / "log.jsonl", "a")
    losses: dict[str, float] = {}

    def checkpoint(kind: str, message: str = "") -> TrainEvent:
        path = str(state.save(run_dir / "state.safetensors")) if run_dir else None
        return TrainEvent(kind, state.step, state.nimg, losses, aug_p=state._aug_p_seen, path=path, message=message)

    def unchecked_failure() -> str | None:
        """Check what no log step has checked yet (the device guard) before saving it; the error if it failed."""
        nonlocal losses
        try:
            losses, _ = state.read_stats()
        except FloatingPointError as e:
            return f"{e}; run stopped, last good weights kept"
        return None

    def sample() -> TrainEvent:
        grid = state.sample_grid() if main else None
        if run_dir:
            Image.fromarray(grid).save(run_dir / "samples" / f"{state.step:06d}.png")
        return TrainEvent("sample", state.step, state.nimg, aug_p=state._aug_p_seen, grid=grid)

    rate = 0.0  # images/s over the last log window
    win_s, win_img = 0.0, 0  # training time and images since the last log step
    t_last = time.perf_counter()
    t_sample = t_ckpt = state.wall_s  # training time of the last sample / checkpoint (for the *_every_s cadences)
    try:
        if state.step == 0 or cfg.sample_every or cfg.sample_every_s:
            yield sample()
        while not state.is_done():
            if stop is not None and stop.is_set() and not state.dist.enabled:
                failure = unchecked_failure()
                yield checkpoint("error", failure) if failure else checkpoint("stopped", "stopped on request")
                return
            try:
                state.train_step(dataset)
                log_now = state.step % cfg.log_every == 0 or state.is_done()
                flags = [0.0, 0.0, 0.0]
                if log_now:
                    t = state.wall_s + time.perf_counter() - t_last
                    flags = [float(stop is not None and stop.is_set()),
                             float(bool(cfg.sample_every_s) and t - t_sample >= cfg.sample_every_s),
                             float(bool(cfg.checkpoint_every_s) and t - t_ckpt >= cfg.checkpoint_every_s)]
                    losses, flags = state.read_stats(tuple(flags))  # waits for the device: the window's time is real
            except FloatingPointError as e:
                yield checkpoint("error", f"{e}; run stopped, last good weights kept")
                return
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            state.wall_s += dt
            win_s, win_img = win_s + dt, win_img + cfg.batch
            if log_now:
                rate, win_s, win_img = win_img / max(win_s, 1e-9), 0.0, 0
            eta = state.remaining_images() / rate if rate > 0 else None
            if log_f and log_now:
                log_f.write(json.dumps({"step": state.step, "nimg": state.nimg, "aug_p": round(state._aug_p_seen, 4),
                                        "img_per_s": round(rate, 2), "wall_s": round(state.wall_s, 1),
                                        **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
                log_f.flush()
            yield TrainEvent("step", state.step, state.nimg, dict(losses), state._aug_p_seen, rate, eta)
            if flags[0] > 0:  # a stop request any rank saw at this log step
                yield checkpoint("stopped", "stopped on request")
                return
            if not state.is_done():
                if (cfg.sample_every and state.step % cfg.sample_every == 0) or flags[1] > 0:
                    yield sample()
                    t_sample = state.wall_s
                if run_dir is not None or state.dist.enabled:
                    if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or flags[2] > 0:
                        failure = None if log_now else unchecked_failure()  # never save an unchecked state
                        if failure:
                            yield checkpoint("error", failure)
                            return
                        yield checkpoint("checkpoint")
                        t_ckpt = state.wall_s
            t_last = time.perf_counter()  # do not count sampling/saving as training time
        yield sample()
        yield checkpoint("done", f"finished after {state.step} steps, {state.nimg} images")
    finally:
        if log_f:
            log_f.close()


# Settings that only say how long to run or how often to report; changing them does not change the model trained.
BOOKKEEPING_FIELDS = ("total_nimg", "steps", "sample_every", "checkpoint_every", "log_every", "num_threads", "grid_seeds",
                      "sample_every_s", "checkpoint_every_s")


def train_config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, list]:
    """{field: [old, new]} for every training setting a resume changes, bookkeeping fields left out."""
    a, b = to_dict(old), to_dict(new)
    return {k: [a.get(k), b[k]] for k in b if k not in BOOKKEEPING_FIELDS and a.get(k) != b[k]}


def new_or_resume(
    run_dir: str | Path, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device | str, resume: bool,
    init: str | Path | None = None, dist: Distributed | None = None,
) -> TrainState:
    """A fresh state, the one saved in run_dir (keeping the new cfg's length so a run can be extended), or a warm
    start from the exported checkpoint `init` (see `TrainState.warm_start`)."""
    path = Path(run_dir) / "state.safetensors"
    if init is not None:
        if resume:
            raise ValueError("either resume the run folder or start from an init checkpoint, not both")
        if path.exists():
            raise FileExistsError(f"{path} exists; resume it (resume=True) or choose another run folder")
        ck = load_checkpoint(init, need_d=True)
        if to_dict(ck.model_cfg) != to_dict(model_cfg):
            raise ValueError(f"{init} holds a different model than the config describes; refusing to continue it")
        return TrainState.warm_start(ck, cfg, device=device, dist=dist)
    if resume and path.exists():
        st = TrainState.load(path, device=device, cfg=cfg, dist=dist)
        if to_dict(st.model_cfg) != to_dict(model_cfg):
            raise ValueError(f"{path} was trained with a different model config; refusing to resume")
        return st
    if resume:
        raise FileNotFoundError(f"resume=True but {path} does not exist")
    if path.exists():
        raise FileExistsError(f"{path} exists; resume it (resume=True) or choose another run folder")
    return TrainState(model_cfg, cfg, device=device, dist=dist)
