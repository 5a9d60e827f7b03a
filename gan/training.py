"""The one training engine, for training from scratch and for fine-tuning: the run state and the loop.

`train()` is a generator of `TrainEvent`s (one per step, plus sample grids, checkpoints and the end), so a CLI
progress bar and a live web page consume the same stream. Setting the `stop` event ends the run cleanly at the
next step boundary (the next log step when several processes train together), after writing the run state.

A run is a few pieces, each in its own module, that `TrainState` ties together and `train()` drives:
    gan/train_nets.py      G, G_ema, D, the freezing policy and the optimizers
    gan/discriminators.py  the kind of D and its loss (gan/loss.py: StyleGAN2Loss, HingeLoss), a pluggable pair
    gan/batches.py         the batch source: real rows, labels, flips, latents, the shared random stream
    gan/augment.py         DiffAugment and the ADA-adapted p (`AdaptiveAugment`, one public `aug_p`)
    gan/guard.py           step statistics and the non-finite guard (host check, device rollback)
    gan/run_state.py       saving, resuming and warm-starting a run
Recipe (stylegan2 D): non-saturating logistic loss, lazy R1 on reals every `r1_interval` steps, style mixing, G EMA
with ramp-up, DiffAugment (same ops on real and fake, in both steps) with an ADA-adapted p. Path-length
regularisation is off, as in SG2-ADA's low-resolution `cifar` config.

A step never waits for the GPU. Randoms (data order, latents, mixing cutoffs, flips, augmentation) are drawn by
generators on the device; the dataset is uploaded once as uint8; loss and D statistics are summed on the device and
read once per `log_every` steps; ADA adapts p on the device; EMA is one `_foreach_lerp_`; Adam is fused.

The non-finite guard ("saved weights are always the last good ones") is described in gan/guard.py.

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

import numpy as np
import torch
from PIL import Image

from gan.augment import AdaptiveAugment
from gan.batches import BatchSource
from gan.checkpoint import Checkpoint
from gan.config import ModelConfig, TrainConfig
from gan.dataset import ImageDataset
from gan.discriminators import make_loss
from gan.distributed import Distributed
from gan.guard import STAT_KEYS, RollbackGuard, StepStats, check_phase, non_finite
from gan.images import to_uint8_grid
from gan.io import atomic_write_text
from gan.labels import seeds_c
from gan.latent import z_from_seeds
from gan.runtime import default_noise_mode
from gan.train_nets import build_networks

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


@dataclass
class LogDecisions:
    """What a log step decides from a clock or a signal, agreed across ranks (each is summed over ranks)."""

    stop: bool = False  # a stop request
    sample: bool = False  # sample_every_s has passed since the last grid
    checkpoint: bool = False  # checkpoint_every_s has passed since the last save

    def to_floats(self) -> tuple[float, float, float]:
        return float(self.stop), float(self.sample), float(self.checkpoint)

    @staticmethod
    def from_floats(v: list[float]) -> "LogDecisions":
        return LogDecisions(*(x > 0 for x in v))


def _rank_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A distinct seed per (run seed, restart step, rank, stream), so streams never coincide."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + stream * 15_485_863) % (2**63)


class TrainState:
    """What a run carries between steps, by owner: networks and optimizers (`nets`), the batch source (`batches`), the
    augmentation state (`augment`), statistics and the non-finite guard (`stats`, `guard`), and the counters."""

    def __init__(
        self,
        model_cfg: ModelConfig,  # the networks' architecture
        cfg: TrainConfig,  # the training recipe and run length
        device: torch.device | str = "cpu",  # where the networks, data and randoms live
        init: Checkpoint | None = None,  # start from this checkpoint's G_ema (and D, when of cfg.d_kind)
        dist: Distributed | None = None,  # this process's place in a data-parallel job (None: alone)
        sync_free: bool | None = None,  # never read the device inside a step (None: on CUDA and with several ranks)
    ):
        self.model_cfg, self.cfg = model_cfg, cfg
        self.device = torch.device(device)
        self.dist = dist or Distributed()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.nets = build_networks(model_cfg, cfg, self.device, init)
        self.batches = BatchSource(model_cfg, self.nets.G.num_ws, cfg, self.device, self.dist.rank,
                                   self.dist.world_size)
        self.G, self.G_ema, self.D = self.nets.G, self.nets.G_ema, self.nets.D
        self.opt_G, self.opt_D = self.nets.opt_G, self.nets.opt_D
        self.g_params, self.d_params = self.nets.g_params, self.nets.d_params  # what each optimizer moves
        self.parent = None if init is None else {"sha256": init.sha256, "path": str(init.path) if init.path else None,
                                                 "nimg": init.meta.get("nimg")}
        self.grid_noise_mode = default_noise_mode(init.meta) if init is not None else "const"
        # A CPU reads its own values for free; on a GPU every read drains the queue, so the step reads nothing.
        # Ranks of a data-parallel job also use the device guard: it decides at log steps, on all-reduced values,
        # so every rank rolls back together instead of one rank stopping while the others wait in an all-reduce.
        self.sync_free = sync_free if sync_free is not None else (self.device.type != "cpu" or self.dist.enabled)
        self.augment = AdaptiveAugment(cfg.augment, cfg.aug_p, cfg.aug_policy, self.device, cfg.ada_target,
                                       cfg.ada_interval, cfg.ada_kimg, read_back=not self.sync_free)
        use_amp = cfg.mixed_precision if cfg.mixed_precision is not None else self.device.type == "cuda"
        # Distance consistency (few-shot fine-tuning) compares G with a frozen copy of where it started.
        source_G = copy.deepcopy(self.G_ema).eval() if cfg.cdc_weight > 0 and init is not None else None
        self.loss = make_loss(self.nets.d_spec, self.G, self.D, self.augment, cfg, source_G=source_G,
                              amp_dtype=torch.bfloat16 if use_amp else None, cdc_weight=cfg.cdc_weight)
        self.step = self.nimg = 0
        self.wall_s = 0.0
        # A fine-tuned conditional model keeps its parent's label counts and groups (what its pickers show).
        self.meta: dict[str, Any] = {"label_info": init.meta["label_info"]} if init is not None and "label_info" in init.meta else {}
        self.seed_streams(step=0, shared=True)
        # EMA works on flat lists of tensors (one foreach call each instead of one call per tensor).
        self._ema_params, self._g_all_params = list(self.G_ema.parameters()), list(self.G.parameters())
        self._ema_buffers, self._g_buffers = list(self.G_ema.buffers()), list(self.G.buffers())
        self.stats = StepStats(self.device)
        self.guard = RollbackGuard(self.state_tensors) if self.sync_free else None
        if self.dist.enabled:  # every rank starts from rank 0's weights (identical already when seeded alike)
            self.dist.broadcast_([t for m in (self.G, self.G_ema, self.D) for t in m.state_dict().values()])

    @property
    def aug_p(self) -> float:
        return self.augment.aug_p

    @aug_p.setter
    def aug_p(self, value: float) -> None:
        self.augment.aug_p = value

    def seed_streams(self, step: int, shared: bool) -> None:
        """(Re)seed the random streams at `step`. `shared`: also the batch stream (identical on every rank)."""
        seed, rank = self.cfg.seed, self.dist.rank
        if shared:
            self.batches.reseed(step)  # data, latents, flips, mixing
        self.augment.gen.manual_seed(_rank_seed(seed, step, rank, 1))
        if rank > 0 or step > 0:  # G's noise inputs use the global RNG; rank 0 of a fresh run continues from init
            torch.manual_seed(_rank_seed(seed, step, rank, 2))

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
               c_real: torch.Tensor | None, c_gen: torch.Tensor | None) -> None:
        """One loss phase: gradients of `params` only, all-reduced over ranks, then one Adam step."""
        for p in params:
            p.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        stats = self.loss.accumulate_gradients(phase, real, *self.batches.latents(), c_real=c_real, c_gen=c_gen)
        for p in params:
            p.requires_grad_(False)
        if not self.sync_free:  # host guard: refuse a non-finite loss before the weights change
            try:
                check_phase(stats, PHASE_NAMES[phase], self.step)
            except FloatingPointError:
                opt.zero_grad(set_to_none=True)
                raise
        self.dist.all_reduce_mean_grads(params)
        opt.step()
        self.stats.add(stats)
        if "sign_real" in stats:
            self.augment.observe(stats["sign_real"])

    def train_step(self, dataset: ImageDataset) -> None:
        """One D step (with lazy R1 when due) and one G step, EMA and ADA updates. Reads nothing back on a GPU.

        Statistics accumulate on the device; `read_stats()` returns their means. On the CPU a non-finite loss
        raises FloatingPointError before that phase's optimizer step, so the weights stay the last good ones.
        """
        cfg = self.cfg
        if self.guard is not None and self.guard.good is None:  # the device guard needs a copy before the first step
            self.guard.snapshot(self.step, self.nimg)
        real, c_real = self.batches.real_batch(dataset)  # (b, 3, R, R) in [-1, 1], (b, c_dim) or None
        conditional = self.model_cfg.c_dim > 0
        # The fakes' labels are drawn only for labelled models, so unconditional runs keep their random sequence.
        c_gen_D = self.batches.gen_labels(dataset) if conditional else None
        c_gen_G = self.batches.gen_labels(dataset) if conditional else None
        self._phase(self.loss.d_phase(self.step), self.opt_D, self.d_params, real, c_real, c_gen_D)
        self._phase("Gmain", self.opt_G, self.g_params, real, c_real, c_gen_G)
        self.step += 1
        self.nimg += cfg.batch
        if conditional:  # the transition: lambda += batch / ramp, up to 1, on the device (G_ema copies it below)
            lam = self.G.mapping_net.label_lambda
            lam.add_(cfg.batch / max(cfg.label_ramp_nimg, 1)).clamp_(max=1.0)
        # G EMA, half-life ema_nimg images (ramped up to a fraction of images seen); beta is known on the host
        ema_nimg = cfg.ema_nimg if cfg.ema_rampup is None else min(cfg.ema_nimg, self.nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._g_all_params, 1.0 - beta)  # ema += (1 - beta) (p - ema)
            torch._foreach_copy_(self._ema_buffers, self._g_buffers)
        self.augment.adapt(self.step, cfg.batch, self.dist.all_reduce_sum_, self.dist.world_size)

    def read_stats(self, decisions: LogDecisions | None = None) -> tuple[dict[str, float], LogDecisions]:
        """Means of the statistics since the last read, and `decisions` agreed over ranks (one sync, one all-reduce).

        The device guard lives here: a non-finite mean rolls the state back to the copy taken at the previous
        good read and raises FloatingPointError; a finite one refreshes that copy.
        """
        decisions = decisions or LogDecisions()
        world = self.dist.world_size
        vec = torch.cat([self.stats.vector(), self.augment.p.reshape(1)])  # (len(STAT_KEYS) + 1,)
        if self.dist.enabled:
            vec = torch.cat([vec, torch.tensor(decisions.to_floats(), dtype=torch.float32, device=self.device)])
            self.dist.all_reduce_sum_(vec)
            vec[len(STAT_KEYS)] /= world  # p is the same on every rank
        host = vec.tolist()  # the one host<->device sync of a log step
        means = self.stats.means(host, world)
        if self.dist.enabled:
            decisions = LogDecisions.from_floats(host[len(STAT_KEYS) + 1 :])
        self.augment.note_read(host[len(STAT_KEYS)])
        bad = non_finite(means)
        if bad:
            good_step = self._rollback()
            raise FloatingPointError(f"non-finite loss ({bad}) after step {good_step}; weights rolled back to step {good_step}")
        if self.guard is not None:
            self.guard.snapshot(self.step, self.nimg)
        return means, decisions

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a step changes, by a stable name (state_dict tensors share storage with the modules)."""
        out = {f"{name}.{k}": v for name, m in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)) for k, v in m.state_dict().items()}
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            for i, p in enumerate(opt.param_groups[0]["params"]):
                for k, v in opt.state.get(p, {}).items():
                    if torch.is_tensor(v):
                        out[f"{name}.{i}.{k}"] = v
        out["aug_p"] = self.augment.p
        return out

    def _rollback(self) -> int:
        """Restore the last good copy (device guard); on the CPU the host guard already kept the weights."""
        if self.guard is None or self.guard.good is None:
            return self.step
        born = self.guard.restore()
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):  # Adam state born after the copy: drop it
            for i, p in enumerate(opt.param_groups[0]["params"]):
                if any(k.startswith(f"{name}.{i}.") for k in born):
                    opt.state.pop(p, None)
        self.step, self.nimg = self.guard.step, self.guard.nimg
        self.augment.reset_statistic()
        self.augment.note_read(float(self.augment.p))
        return self.step

    def is_done(self) -> bool:
        if self.cfg.steps is not None:
            return self.step >= self.cfg.steps
        return self.nimg >= self.cfg.total_nimg

    def remaining_images(self) -> int:
        if self.cfg.steps is not None:
            return max(self.cfg.steps - self.step, 0) * self.cfg.batch
        return max(self.cfg.total_nimg - self.nimg, 0)

    def save(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write the run state (see gan/run_state.py)."""
        from gan.run_state import save_state

        return save_state(self, path, extra_meta)


# ----------------------------------------------------------------------------------------------------------------
# The loop


class _RunFolder:
    """run_dir on rank 0: log.jsonl (cut back to the state resumed from), samples/NNNNNN.png and state.safetensors."""

    def __init__(self, run_dir: Path, step: int):
        self.dir = run_dir
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "log.jsonl"
        if log_path.exists():  # drop lines written after the state we resume from, so the curve has no fork
            keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
            atomic_write_text(log_path, "".join(ln + "\n" for ln in keep))
        self.log: TextIO = open(log_path, "a")

    def write_log(self, state: TrainState, rate: float, losses: dict[str, float]) -> None:
        self.log.write(json.dumps({"step": state.step, "nimg": state.nimg, "aug_p": round(state.augment.seen, 4),
                                   "img_per_s": round(rate, 2), "wall_s": round(state.wall_s, 1),
                                   **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
        self.log.flush()


class _Loop:
    """The bookkeeping `train()` needs around the steps: events, the run folder, the training clock."""

    def __init__(self, state: TrainState, run_dir: Path | None):
        self.state, self.cfg = state, state.cfg
        self.folder = _RunFolder(run_dir, state.step) if run_dir else None
        self.losses: dict[str, float] = {}
        self.rate = 0.0  # images/s over the last log window
        self.win_s, self.win_img = 0.0, 0  # training time and images since the last log step
        self.t_last = time.perf_counter()
        self.t_sample = self.t_ckpt = state.wall_s  # training time of the last sample / checkpoint

    def checkpoint(self, kind: str, message: str = "") -> TrainEvent:
        st = self.state
        path = str(st.save(self.folder.dir / "state.safetensors")) if self.folder else None
        return TrainEvent(kind, st.step, st.nimg, self.losses, aug_p=st.augment.seen, path=path, message=message)

    def checked_checkpoint(self, kind: str, message: str = "") -> TrainEvent:
        """A checkpoint of a state the guard has checked (read what no log step has read yet); an error if it fails."""
        try:
            self.losses, _ = self.state.read_stats()
        except FloatingPointError as e:
            return self.checkpoint("error", f"{e}; run stopped, last good weights kept")
        return self.checkpoint(kind, message)

    def sample(self) -> TrainEvent:
        st = self.state
        grid = st.sample_grid() if st.dist.is_main else None
        if self.folder:
            Image.fromarray(grid).save(self.folder.dir / "samples" / f"{st.step:06d}.png")
        self.t_sample = st.wall_s
        return TrainEvent("sample", st.step, st.nimg, aug_p=st.augment.seen, grid=grid)

    def decide(self, stop: threading.Event | None) -> LogDecisions:
        t = self.state.wall_s + time.perf_counter() - self.t_last
        return LogDecisions(stop=stop is not None and stop.is_set(),
                            sample=bool(self.cfg.sample_every_s) and t - self.t_sample >= self.cfg.sample_every_s,
                            checkpoint=bool(self.cfg.checkpoint_every_s) and t - self.t_ckpt >= self.cfg.checkpoint_every_s)

    def step_event(self, log_now: bool) -> TrainEvent:
        """Count the step's time (and the window's rate at a log step), log it, and make its event."""
        st, now = self.state, time.perf_counter()
        dt, self.t_last = now - self.t_last, now
        st.wall_s += dt
        self.win_s, self.win_img = self.win_s + dt, self.win_img + self.cfg.batch
        if log_now:
            self.rate, self.win_s, self.win_img = self.win_img / max(self.win_s, 1e-9), 0.0, 0
            if self.folder:
                self.folder.write_log(st, self.rate, self.losses)
        eta = st.remaining_images() / self.rate if self.rate > 0 else None
        return TrainEvent("step", st.step, st.nimg, dict(self.losses), st.augment.seen, self.rate, eta)

    def sample_due(self, decisions: LogDecisions) -> bool:
        return bool(self.cfg.sample_every and self.state.step % self.cfg.sample_every == 0) or decisions.sample

    def checkpoint_due(self, decisions: LogDecisions) -> bool:
        if self.folder is None and not self.state.dist.enabled:
            return False
        return bool(self.cfg.checkpoint_every and self.state.step % self.cfg.checkpoint_every == 0) or decisions.checkpoint

    def close(self) -> None:
        if self.folder:
            self.folder.log.close()


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
    state.meta.setdefault("dataset", dataset.name)
    state.meta.setdefault("license", dataset.license)
    loop = _Loop(state, Path(run_dir) if run_dir and state.dist.is_main else None)
    try:
        if state.step == 0 or cfg.sample_every or cfg.sample_every_s:
            yield loop.sample()
        while not state.is_done():
            if stop is not None and stop.is_set() and not state.dist.enabled:
                yield loop.checked_checkpoint("stopped", "stopped on request")
                return
            decisions = LogDecisions()
            try:
                state.train_step(dataset)
                log_now = state.step % cfg.log_every == 0 or state.is_done()
                if log_now:  # waits for the device: the window's time is real
                    loop.losses, decisions = state.read_stats(loop.decide(stop))
            except FloatingPointError as e:
                yield loop.checkpoint("error", f"{e}; run stopped, last good weights kept")
                return
            yield loop.step_event(log_now)
            if decisions.stop:  # a stop request any rank saw at this log step
                yield loop.checkpoint("stopped", "stopped on request")
                return
            if not state.is_done():
                if loop.sample_due(decisions):
                    yield loop.sample()
                if loop.checkpoint_due(decisions):
                    # never save an unchecked state: off a log step, the guard checks it first
                    event = loop.checkpoint("checkpoint") if log_now else loop.checked_checkpoint("checkpoint")
                    yield event
                    if event.kind == "error":
                        return
                    loop.t_ckpt = state.wall_s
            loop.t_last = time.perf_counter()  # do not count sampling/saving as training time
        yield loop.sample()
        yield loop.checkpoint("done", f"finished after {state.step} steps, {state.nimg} images")
    finally:
        loop.close()
