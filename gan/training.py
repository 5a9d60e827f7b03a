"""The one training engine, for training from scratch and for fine-tuning.

`train()` is a generator of `TrainEvent`s (one per step, plus sample grids, checkpoints and the end), so a CLI
progress bar and a live web page consume the same stream. Setting the `stop` event ends the run cleanly at the
next step boundary, after writing the run state.

Losses (StyleGAN2 / SG2-ADA): non-saturating logistic loss, lazy R1 on reals every `r1_interval` steps, style
mixing, G EMA with ramp-up, DiffAugment (same ops on real and fake, in both steps) with an ADA-adapted p.
Path-length regularisation is off, as in SG2-ADA's low-resolution `cifar` config.

Run folder layout (`run_dir`):
    state.safetensors   G, G_ema, D, both Adam states, augment p, step, images seen, RNG states (resume point)
    log.jsonl           one JSON line per `log_every` steps (losses, p, img/s); cut back to the state on resume
    samples/NNNNNN.png  fixed-seed sample grids
"""
from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gan.augment import augment, parse_policy
from gan.checkpoint import Checkpoint, load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from gan.config import ModelConfig, TrainConfig, from_dict, to_dict
from gan.dataset import ImageDataset
from gan.defaults import default_noise_mode, hardware_name
from gan.images import to_uint8_grid
from gan.io import atomic_write_text
from gan.latent import z_from_seeds
from gan.networks import Discriminator, Generator


@dataclass
class TrainEvent:
    kind: str  # 'step', 'sample', 'checkpoint', 'done', 'stopped' or 'error'
    step: int  # optimisation steps done
    nimg: int  # real images shown to D so far
    losses: dict[str, float] = field(default_factory=dict)  # loss_G, loss_D, r1, D_real, D_fake, sign_real
    aug_p: float = 0.0  # augmentation probability
    img_per_s: float = 0.0  # recent throughput
    eta_s: float | None = None  # estimated seconds to the end
    grid: np.ndarray | None = None  # (H, W, 3) uint8 sample grid of G_ema at fixed seeds ('sample' events)
    message: str = ""  # human-readable note (errors, where a checkpoint went)
    path: str | None = None  # checkpoint written ('checkpoint', 'done', 'stopped')


class TrainState:
    """Everything a run needs to continue: networks, optimizers, counters, augment p and RNG states."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device | str = "cpu", init: Checkpoint | None = None):
        self.model_cfg, self.cfg = model_cfg, cfg
        self.device = torch.device(device)
        parse_policy(cfg.aug_policy)
        if cfg.augment not in ("ada", "fixed", "none"):
            raise ValueError(f"augment must be 'ada', 'fixed' or 'none', got {cfg.augment!r}")
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # data order, latents, mixing, augmentation
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
        self.G_ema.eval()
        # Trainable parameters (fine-tuning freezes the mapping network and the highest-resolution D blocks).
        self.g_params = [p for n, p in self.G.named_parameters() if not (cfg.freeze_mapping and n.startswith("mapping_net."))]
        frozen_d = {f"blocks.{i}." for i in range(cfg.freeze_d_blocks)}
        if cfg.freeze_d_blocks > len(self.D.blocks):
            raise ValueError(f"freeze_d_blocks={cfg.freeze_d_blocks} but D has only {len(self.D.blocks)} blocks")
        self.d_params = [p for n, p in self.D.named_parameters() if not any(n.startswith(f) for f in frozen_d)]
        self.opt_G = torch.optim.Adam(self.g_params, lr=cfg.lr_g, betas=cfg.betas, eps=1e-8)
        self.opt_D = torch.optim.Adam(self.d_params, lr=cfg.lr_d, betas=cfg.betas, eps=1e-8)
        self.step = 0
        self.nimg = 0
        self.aug_p = float(cfg.aug_p) if cfg.augment != "none" else 0.0
        self.wall_s = 0.0
        self.meta: dict[str, Any] = {}
        self._sign_acc: list[float] = []  # sign(D(real)) since the last ADA adjustment

    # ---- persistence ----------------------------------------------------------------------------------------

    def save(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        extra = optimizer_to_tensors("opt_G", self.opt_G, self.G)
        extra.update(optimizer_to_tensors("opt_D", self.opt_D, self.D))
        extra["rng.gen"] = self.gen.get_state()
        extra["rng.torch_cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            extra["rng.torch_cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            **self.meta, "train": to_dict(self.cfg), "step": self.step, "nimg": self.nimg, "aug_p": self.aug_p,
            "wall_s": round(self.wall_s, 1), "parent": self.parent,
            "hardware": hardware_name(self.device),
            "torch": torch.__version__, **(extra_meta or {}),
        }
        return save_checkpoint(path, self.model_cfg, self.G_ema, self.G, self.D, meta=meta, extra=extra)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", cfg: TrainConfig | None = None) -> "TrainState":
        """Resume from a state written by `save` (optionally with a changed TrainConfig, e.g. a longer run)."""
        ck = load_checkpoint(path, need_d=True)
        if ck.G is None:
            raise ValueError(f"{path} holds no G; it is not a run state")
        saved_cfg = from_dict(TrainConfig, ck.meta["train"])
        st = cls(ck.model_cfg, cfg or saved_cfg, device=device)
        st.G.load_state_dict(ck.G.state_dict())
        st.G_ema.load_state_dict(ck.G_ema.state_dict())
        st.D.load_state_dict(ck.D.state_dict())
        optimizer_from_tensors("opt_G", st.opt_G, st.G, ck.extra)
        optimizer_from_tensors("opt_D", st.opt_D, st.D, ck.extra)
        if "rng.gen" in ck.extra:
            st.gen.set_state(ck.extra["rng.gen"])
        if "rng.torch_cpu" in ck.extra:
            torch.set_rng_state(ck.extra["rng.torch_cpu"])
        if "rng.torch_cuda" in ck.extra and st.device.type == "cuda":
            torch.cuda.set_rng_state(ck.extra["rng.torch_cuda"], st.device)
        st.step, st.nimg = int(ck.meta["step"]), int(ck.meta["nimg"])
        st.aug_p = float(ck.meta.get("aug_p", 0.0))
        st.wall_s = float(ck.meta.get("wall_s", 0.0))
        st.parent = ck.meta.get("parent")
        st._carry_history(ck.meta, saved_cfg)
        return st

    @classmethod
    def warm_start(cls, ck: Checkpoint, cfg: TrainConfig, device: torch.device | str = "cpu") -> "TrainState":
        """Continue a run from exported weights (G_ema + D, e.g. the shipped checkpoint) when its run state is gone.

        G starts from G_ema, as StyleGAN's resume-from-pickle does, and both Adam states start fresh. Images seen,
        augment p, wall time and the run's history carry over; `warm_starts` in the metadata records where it
        happened, so the card says the optimizer state was reset there.
        """
        if "nimg" not in ck.meta or "train" not in ck.meta:
            raise ValueError(f"{ck.path} has no training history (nimg, train); use `finetune` to adapt it instead")
        st = cls(ck.model_cfg, cfg, device=device, init=ck)
        st.parent = ck.meta.get("parent")  # the same run, not a fine-tune of it
        st.step, st.nimg = int(ck.meta.get("step", 0)), int(ck.meta["nimg"])
        st.gen.manual_seed(cfg.seed + st.step)  # not a replay of the run's first batches
        st.aug_p = float(ck.meta.get("aug_p", cfg.aug_p)) if cfg.augment != "none" else 0.0
        st.wall_s = float(ck.meta.get("wall_s", 0.0))
        st._carry_history(ck.meta, from_dict(TrainConfig, ck.meta["train"]))
        st.meta["warm_starts"] = [*st.meta.get("warm_starts", []),
                                  {"at_nimg": st.nimg, "from_sha256": ck.sha256, "reset": "G from G_ema; Adam states"}]
        return st

    def _carry_history(self, meta: dict[str, Any], saved_cfg: TrainConfig) -> None:
        """Keep the run's dataset, surgery and settings history, and note any setting this continuation changes."""
        self.meta = {k: meta[k] for k in ("dataset", "license", "surgery", "train_changes", "warm_starts") if k in meta}
        changed = train_config_changes(saved_cfg, self.cfg)
        if changed:  # the run's history says which settings held when, so the card describes the real recipe
            self.meta["train_changes"] = [*self.meta.get("train_changes", []), {"at_nimg": self.nimg, "changed": changed}]

    # ---- sampling helpers -----------------------------------------------------------------------------------

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.device)

    def _mapping_mixed(self, G: Generator, batch: int, update_w_avg: bool = False) -> torch.Tensor:
        """ws (B, num_ws, w_dim) with style mixing: after a random cutoff layer, ws come from a second z."""
        ws = G.mapping(self._randn(batch, self.model_cfg.z_dim), update_w_avg=update_w_avg)  # (B, num_ws, w_dim)
        if self.cfg.style_mixing > 0 and torch.rand([], generator=self.gen).item() < self.cfg.style_mixing:
            cutoff = int(torch.randint(1, ws.shape[1], [], generator=self.gen))
            ws2 = G.mapping(self._randn(batch, self.model_cfg.z_dim))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def _aug(self, img: torch.Tensor) -> torch.Tensor:
        return augment(img, self.aug_p, self.cfg.aug_policy, gen=self.gen) if self.aug_p > 0 else img

    @torch.no_grad()
    def sample_grid(self, seeds: tuple[int, ...] | None = None, psi: float = 1.0) -> np.ndarray:
        """G_ema at fixed seeds (noise as the parent checkpoint recommends, else const) -> (H, W, 3) uint8 grid."""
        seeds = tuple(seeds or self.cfg.grid_seeds)
        z = z_from_seeds(list(seeds), self.model_cfg.z_dim).to(self.device)
        img = self.G_ema.synthesis(self.G_ema.mapping(z, psi=psi), noise_mode=self.grid_noise_mode)
        return to_uint8_grid(img.cpu(), cols=len(seeds) if len(seeds) <= 8 else None)

    # ---- one optimisation step ------------------------------------------------------------------------------

    def _optimize(self, name: str, loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        """Backward + step, refusing a non-finite loss before touching the weights; then freeze `params` again."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name} loss is {float(loss)} at step {self.step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for p in params:
            p.requires_grad_(False)

    def real_batch(self, dataset: ImageDataset) -> torch.Tensor:
        """A batch of real images drawn with replacement, (B, 3, R, R) in [-1, 1]; with cfg.xflip, each one is
        mirrored left-right with probability 0.5 (the dataset, twice over; G learns both orientations)."""
        B = self.cfg.batch
        idx = torch.randint(len(dataset), (B,), generator=self.gen)
        real = dataset.to_tensor(idx, self.device)  # (B, 3, R, R)
        if self.cfg.xflip:  # drawn only when on, so runs without it keep their random sequence
            flip = (torch.rand(B, generator=self.gen) < 0.5).to(self.device).view(B, 1, 1, 1)
            real = torch.where(flip, real.flip(3), real)
        return real

    def train_step(self, dataset: ImageDataset) -> dict[str, float]:
        """One D step (with lazy R1 when due) and one G step, EMA and ADA updates. Returns the losses.

        Raises FloatingPointError before any optimizer step is applied if a loss is not finite, so the weights
        stay the last good ones.
        """
        cfg, B = self.cfg, self.cfg.batch
        stats: dict[str, float] = {}
        real = self.real_batch(dataset)  # (B, 3, R, R) in [-1, 1]

        # -- D step: softplus(D(fake)) + softplus(-D(real)) [+ lazy R1 on reals]
        do_r1 = cfg.r1_gamma > 0 and cfg.r1_interval > 0 and self.step % cfg.r1_interval == 0
        for p in self.d_params:
            p.requires_grad_(True)
        with torch.no_grad():
            fake = self.G.synthesis(self._mapping_mixed(self.G, B), noise_mode="random")  # (B, 3, R, R)
        real_in = real.detach().requires_grad_(do_r1)
        logits_real = self.D(self._aug(real_in))  # (B, 1)
        logits_fake = self.D(self._aug(fake))
        loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        total_D = loss_D
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), real_in, create_graph=True)
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            total_D = loss_D + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            stats["r1"] = float(r1.detach())
        self._optimize("discriminator", total_D, self.opt_D, self.d_params)
        sign_real = float(logits_real.detach().sign().mean())
        stats.update(loss_D=float(loss_D.detach()), D_real=float(logits_real.detach().mean()), D_fake=float(logits_fake.detach().mean()), sign_real=sign_real)

        # -- G step: softplus(-D(G(z)))
        for p in self.g_params:
            p.requires_grad_(True)
        ws = self._mapping_mixed(self.G, B, update_w_avg=True)
        fake = self.G.synthesis(ws, noise_mode="random")
        loss_G = F.softplus(-self.D(self._aug(fake))).mean()
        self._optimize("generator", loss_G, self.opt_G, self.g_params)
        stats["loss_G"] = float(loss_G.detach())
        self.step += 1
        self.nimg += B

        # -- G EMA, half-life ema_nimg images (ramped up to a fraction of images seen)
        ema_nimg = cfg.ema_nimg if cfg.ema_rampup is None else min(cfg.ema_nimg, self.nimg * cfg.ema_rampup)
        beta = 0.5 ** (B / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

        # -- ADA: move p towards E[sign(D(real))] = target
        if cfg.augment == "ada":
            self._sign_acc.append(sign_real)
            if self.step % cfg.ada_interval == 0:
                adjust = np.sign(np.mean(self._sign_acc) - cfg.ada_target) * B * cfg.ada_interval / (cfg.ada_kimg * 1000)
                self.aug_p = float(min(max(self.aug_p + adjust, 0.0), 1.0))
                self._sign_acc = []
        return stats

    def is_done(self) -> bool:
        if self.cfg.steps is not None:
            return self.step >= self.cfg.steps
        return self.nimg >= self.cfg.total_nimg

    def remaining_images(self) -> int:
        if self.cfg.steps is not None:
            return max(self.cfg.steps - self.step, 0) * self.cfg.batch
        return max(self.cfg.total_nimg - self.nimg, 0)


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
    """Run until the configured length, a stop request, or a non-finite loss. Yields TrainEvents."""
    cfg = state.cfg
    if dataset.resolution != state.model_cfg.resolution:
        raise ValueError(f"dataset is {dataset.resolution}px but the model makes {state.model_cfg.resolution}px images")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    state.meta.setdefault("dataset", dataset.name)
    state.meta.setdefault("license", dataset.license)
    run_dir = Path(run_dir) if run_dir else None
    log_f = None
    if run_dir:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        _truncate_log(run_dir / "log.jsonl", state.step)
        log_f = open(run_dir / "log.jsonl", "a")

    def checkpoint(kind: str, message: str = "") -> TrainEvent:
        path = str(state.save(run_dir / "state.safetensors")) if run_dir else None
        return TrainEvent(kind, state.step, state.nimg, aug_p=state.aug_p, path=path, message=message)

    def sample() -> TrainEvent:
        grid = state.sample_grid()
        if run_dir:
            Image.fromarray(grid).save(run_dir / "samples" / f"{state.step:06d}.png")
        return TrainEvent("sample", state.step, state.nimg, aug_p=state.aug_p, grid=grid)

    rate = 0.0  # images/s, smoothed
    t_last = time.perf_counter()
    try:
        if state.step == 0 or cfg.sample_every:
            yield TrainEvent("sample", state.step, state.nimg, aug_p=state.aug_p, grid=state.sample_grid())
        while not state.is_done():
            if stop is not None and stop.is_set():
                yield checkpoint("stopped", "stopped on request")
                return
            try:
                losses = state.train_step(dataset)
            except FloatingPointError as e:
                yield checkpoint("error", f"{e}; run stopped, last good weights kept")
                return
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            state.wall_s += dt
            inst = cfg.batch / max(dt, 1e-9)
            rate = inst if rate == 0 else 0.9 * rate + 0.1 * inst
            eta = state.remaining_images() / rate if rate > 0 else None
            ev = TrainEvent("step", state.step, state.nimg, losses, state.aug_p, rate, eta)
            if log_f and (state.step % cfg.log_every == 0 or state.is_done()):
                log_f.write(json.dumps({"step": state.step, "nimg": state.nimg, "aug_p": round(state.aug_p, 4),
                                        "img_per_s": round(rate, 2), "wall_s": round(state.wall_s, 1),
                                        **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
                log_f.flush()
            yield ev
            if cfg.sample_every and state.step % cfg.sample_every == 0 and not state.is_done():
                yield sample()
            if run_dir and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and not state.is_done():
                yield checkpoint("checkpoint")
            t_last = time.perf_counter()  # do not count sampling/saving as training time
        yield sample()
        yield checkpoint("done", f"finished after {state.step} steps, {state.nimg} images")
    finally:
        if log_f:
            log_f.close()


# Settings that only say how long to run or how often to report; changing them does not change the model trained.
BOOKKEEPING_FIELDS = ("total_nimg", "steps", "sample_every", "checkpoint_every", "log_every", "num_threads", "grid_seeds")


def train_config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, list]:
    """{field: [old, new]} for every training setting a resume changes, bookkeeping fields left out."""
    a, b = to_dict(old), to_dict(new)
    return {k: [a[k], b[k]] for k in b if k not in BOOKKEEPING_FIELDS and a.get(k) != b[k]}


def new_or_resume(
    run_dir: str | Path, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device | str, resume: bool,
    init: str | Path | None = None,
) -> TrainState:
    """A fresh state, the one saved in run_dir (keeping the new cfg's length so a run can be extended), or a warm
    start from the exported checkpoint `init` (see `TrainState.warm_start`)."""
    path = Path(run_dir) / "state.safetensors"
    if init is not None:
        if resume:
            raise ValueError("give --resume (continue run_dir) or --init (start from a checkpoint), not both")
        if path.exists():
            raise FileExistsError(f"{path} exists; pass --resume to continue it or choose another --out")
        ck = load_checkpoint(init, need_d=True)
        if to_dict(ck.model_cfg) != to_dict(model_cfg):
            raise ValueError(f"{init} holds a different model than the config describes; refusing to continue it")
        return TrainState.warm_start(ck, cfg, device=device)
    if resume and path.exists():
        st = TrainState.load(path, device=device, cfg=cfg)
        if to_dict(st.model_cfg) != to_dict(model_cfg):
            raise ValueError(f"{path} was trained with a different model config; refusing to resume")
        return st
    if resume:
        raise FileNotFoundError(f"--resume given but {path} does not exist")
    if path.exists():
        raise FileExistsError(f"{path} exists; pass --resume to continue it or choose another --out")
    return TrainState(model_cfg, cfg, device=device)

