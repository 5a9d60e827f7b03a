"""A fine-tuning run as the app sees it: the request checked and turned into images and a recipe
(`plan_finetune`), a stream of UI-ready updates over the training engine (`run_finetune`), and the messages the
/finetune endpoint sends while it waits for a slot and runs (`stream_finetune`), ending with the tuned model in
memory (ready to explore) and its file written once (for download).

The user gives the run a length in seconds (steps are a cap). What the page shows is cheap to make: the curves are
data (the browser draws them), the fixed-seed grid is re-rendered every few seconds, and the distance to the
user's images (KID on a small sample, in the emoji feature space) is computed in a background thread on a copy of
G_ema, so training never waits for it.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from gan.checkpoint import Checkpoint, read_metadata, save_checkpoint
from gan.config import FINETUNE_DEFAULTS, FINETUNE_KEEP_VARIETY, TrainConfig
from gan.dataset import ImageDataset, load_images
from gan.evaluate import TargetKID
from gan.images import upscale
from gan.io import file_sha256
from gan.networks import Generator
from gan.sets import load_set
from gan.training import TrainState, train
from studio import media
from studio.media import PREVIEW_SEEDS
from studio.models import LoadedModel, serve
from studio.session import Job, Sessions

MAX_FINETUNE_IMAGES = 500
GRID_EVERY_S = 3.0  # the live sample grid is re-rendered this often
KID_EVERY_S = 10.0  # the live distance to the user's images is measured this often (in the background)
LIVE_KID_SAMPLES = 64  # samples per live KID (the before/after figure uses 256)
MAX_RUN_SECONDS = 3600
BUNDLED_SOURCE, UPLOAD_SOURCE = "bundled set", "upload"  # where a run's images come from
DATA_SOURCES = (BUNDLED_SOURCE, UPLOAD_SOURCE)  # the first is the app's default
SLOW_MODEL_RESOLUTION = 256  # from this size on a CPU step takes many seconds: the user is told


class FinetuneFailed(RuntimeError):
    """A fine-tune ended without a model to show (stopped before its first step)."""


@dataclass
class FinetuneUpdate:
    """One UI refresh of a fine-tuning run."""

    status: str  # progress line: step, seconds, images/s, ETA, augment p
    history: list[dict[str, float]]  # one entry per step: step, seconds, loss_G, loss_D, D_real, D_fake, aug_p
    grid: np.ndarray | None  # (H, W, 3) uint8 fixed-seed samples, upscaled
    kid: list[dict[str, float]] = field(default_factory=list)  # live distance to the user's images: step, seconds, kid
    done: bool = False
    model: LoadedModel | None = None  # the tuned model, on the last update
    checkpoint: Path | None = None  # its lean file (G_ema + D + card), on the last update
    error: str | None = None


def check_run_length(seconds: float) -> float:
    """The run length in seconds as a float; ValueError outside [1, MAX_RUN_SECONDS]."""
    seconds = float(seconds)
    if not 1 <= seconds <= MAX_RUN_SECONDS:
        raise ValueError(f"run length must be within [1, {MAX_RUN_SECONDS}] seconds, got {seconds:g}")
    return seconds


def finetune_config(n_images: int, **overrides) -> TrainConfig:
    """The shared fine-tuning recipe (`TrainConfig.finetune_defaults`, which validates `overrides`); the app draws
    its own grids (on a clock, not every N steps) and keeps no intermediate run states."""
    return TrainConfig.finetune_defaults(n_images, **overrides, sample_every=0, checkpoint_every=0,
                                         grid_seeds=PREVIEW_SEEDS)


class LiveKID:
    """KID between G_ema snapshots and the target set, measured in a background thread (latest request wins)."""

    def __init__(self, target: TargetKID, n: int = LIVE_KID_SAMPLES):
        self.target, self.n = target, n  # the user's images, embedded once; samples per measurement
        self.results: list[dict[str, float]] = []  # step, seconds, kid, in the order measured
        self._busy = threading.Lock()

    def request(self, G_ema: Generator, step: int, seconds: float) -> None:
        """Measure a snapshot of G_ema at `step` unless a measurement is still running."""
        if not self._busy.acquire(blocking=False):
            return
        snapshot = copy.deepcopy(G_ema).cpu().eval()
        threading.Thread(target=self._measure, args=(snapshot, step, seconds), daemon=True).start()

    def _measure(self, G: Generator, step: int, seconds: float) -> None:
        try:
            kid = self.target(G, n=self.n)
            if kid is not None:
                self.results.append({"step": step, "seconds": round(seconds, 1), "kid": float(kid)})
        finally:
            self._busy.release()


def load_finetune_data(source: str, bundled: str | None, uploads: list[str], size: int) -> ImageDataset:
    """The images of a run at `size` px: the user's files (images, folders, zips) or a bundled set, as `source`
    says. Giving files while choosing the bundled set is refused rather than guessed. ValueError / DatasetError."""
    if source not in DATA_SOURCES:
        raise ValueError(f"data_source must be {' or '.join(map(repr, DATA_SOURCES))}, got {source!r}")
    if source == BUNDLED_SOURCE:
        if uploads:
            raise ValueError(f"you gave {len(uploads)} uploaded file(s) but chose the bundled set; choose "
                             "'upload' to train on your files, or remove them to use the bundled set")
        return load_set(bundled, size=size)
    if not uploads:
        raise ValueError("upload some images (or a zip) first, or choose a bundled set")
    return load_images(uploads, size=size, name="uploads", min_images=2)


@dataclass
class FinetunePlan:
    """A checked fine-tune request: the images, the recipe, the run length and what the user should be told."""

    dataset: ImageDataset
    cfg: TrainConfig
    seconds: float
    warnings: list[str] = field(default_factory=list)  # skipped files, a slow model on a CPU


def plan_finetune(base: LoadedModel, device: torch.device, source: str, bundled: str | None, uploads: list[str], *,
                  steps: int, lr: float, augment: str, freeze_mapping: bool, freeze_d_blocks: int, mirror: bool,
                  seconds: float, keep_variety: bool, d_kind: str = FINETUNE_DEFAULTS["d_kind"]) -> FinetunePlan:
    """Check a request (the /finetune parameters) and load its images; ValueError / DatasetError say what is wrong.
    `lr` is both networks' learning rate; `keep_variety` adds FINETUNE_KEEP_VARIETY to the recipe."""
    ds = load_finetune_data(source, bundled, uploads, base.resolution)
    warnings = [f"skipped {len(ds.skipped)} file(s): " + "; ".join(ds.skipped[:3])] if ds.skipped else []
    if device.type == "cpu" and base.resolution >= SLOW_MODEL_RESOLUTION:
        warnings.append(f"This is a {base.resolution} px model on a CPU: each step takes many seconds (the ETA "
                        "shows after the first one). Try a few steps first.")
    cfg = finetune_config(len(ds), steps=int(steps), lr_g=float(lr), lr_d=float(lr), augment=augment,
                          freeze_mapping=bool(freeze_mapping), freeze_d_blocks=int(freeze_d_blocks), xflip=bool(mirror),
                          d_kind=str(d_kind), **(FINETUNE_KEEP_VARIETY if keep_variety else {}))
    return FinetunePlan(ds, cfg, check_run_length(seconds), warnings)


def run_finetune(base: LoadedModel, dataset: ImageDataset, cfg: TrainConfig, stop: threading.Event, out_dir: Path,
                 device: torch.device | str = "cpu", seconds: float | None = None) -> Iterator[FinetuneUpdate]:
    """Fine-tune `base` on `dataset` for `seconds` of training (and at most cfg.steps), yielding an update after
    every step; the last one carries the tuned model. `stop` ends it early; the result is usable at any stop."""
    if len(dataset) > MAX_FINETUNE_IMAGES:
        raise ValueError(f"at most {MAX_FINETUNE_IMAGES} images, got {len(dataset)}")
    if base.checkpoint.D is None and cfg.d_kind != "projected":
        raise ValueError("this model has no discriminator of its own: fine-tune it with the projected discriminator, "
                         "which starts a fresh one")
    if seconds is not None:
        seconds = check_run_length(seconds)
    state = TrainState(base.checkpoint.model_cfg, cfg, device=device, init=base.checkpoint)
    target = TargetKID(dataset)  # the user's images in feature space, for every measurement of this run
    kid_before: list[float | None] = []  # the base model's KID (256 samples), measured beside the first steps
    before = threading.Thread(target=lambda: kid_before.append(target(base.G)), daemon=True)
    before.start()
    live = LiveKID(target)
    live.request(state.G_ema, 0, 0.0)  # the starting distance, measured while the first steps run
    history: list[dict[str, float]] = []
    grid_img = upscale(state.sample_grid(), 2)
    t_start = time.perf_counter()
    t_grid = t_kid = 0.0
    timer = threading.Event()  # set when the time budget is spent; ends the run like the Stop button
    for ev in train(state, dataset, run_dir=out_dir, stop=_either(stop, timer)):
        if ev.kind == "step":
            elapsed = time.perf_counter() - t_start
            history.append({"step": ev.step, "seconds": round(elapsed, 2), "aug_p": ev.aug_p, **ev.losses})
            if elapsed - t_grid >= GRID_EVERY_S:
                grid_img, t_grid = upscale(state.sample_grid(), 2), elapsed
            if elapsed - t_kid >= KID_EVERY_S:
                live.request(state.G_ema, ev.step, elapsed)
                t_kid = elapsed
            if seconds is not None and elapsed >= seconds:
                timer.set()
            yield FinetuneUpdate(_status(ev.step, cfg.steps, elapsed, seconds, ev.img_per_s, ev.eta_s, ev.aug_p),
                                 history, grid_img, list(live.results))
        elif ev.kind in ("done", "stopped", "error"):
            grid_img = upscale(state.sample_grid(), 2)
            kid_after = target(state.G_ema.eval())
            before.join()
            model, path = _export(state, dataset, ev.kind, ev.nimg, ev.step, kid_before[0], kid_after, out_dir,
                                  base.G.w_avg.device)
            if ev.kind == "error":
                yield FinetuneUpdate(f"stopped at step {ev.step}: {ev.message}", history, grid_img, list(live.results),
                                     True, model, path, ev.message)
                return
            word = "finished" if ev.kind == "done" or timer.is_set() else "stopped"
            kid = (f" · KID to your images {kid_before[0]:.3f} → {kid_after:.3f} (lower is closer)"
                   if kid_before[0] is not None and kid_after is not None else "")
            yield FinetuneUpdate(f"{word} at step {ev.step} ({ev.nimg} images, {time.perf_counter() - t_start:.0f} s){kid}",
                                 history, grid_img, list(live.results), True, model, path)
            return


class _either:
    """A stop flag that is set when either of two events is (the user's Stop, or the time budget)."""

    def __init__(self, a: threading.Event, b: threading.Event):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


def _status(step: int, max_steps: int | None, elapsed: float, seconds: float | None, img_per_s: float,
            eta_steps: float | None, aug_p: float) -> str:
    """'step 12 · 9 s of 60 · 9.6 img/s · 51 s left · augment p 0.50' (the earlier of the time and step limits)."""
    left = [v for v in (seconds - elapsed if seconds is not None else None, eta_steps) if v is not None]
    eta = f" · {max(min(left), 0):.0f} s left" if left else ""
    of = f" of {seconds:.0f}" if seconds is not None else ""
    cap = f"/{max_steps}" if max_steps is not None and seconds is None else ""
    return f"step {step}{cap} · {elapsed:.0f} s{of} · {img_per_s:.1f} img/s{eta} · augment p {aug_p:.2f}"


def _export(state: TrainState, dataset: ImageDataset, end: str, nimg: int, step: int, kid_before: float | None,
            kid_after: float | None, out_dir: Path, device: torch.device) -> tuple[LoadedModel, Path]:
    """Write the tuned model's lean file once and wrap the same weights for serving (nothing is read back)."""
    meta = {"dataset": dataset.name, "license": dataset.license, "nimg": nimg, "step": step,
            "default_noise_mode": state.grid_noise_mode, "parent": state.parent, "train": state.cfg.__dict__,
            "finetune_end": end, "metrics": {"kid_to_target_before": kid_before, "kid_to_target_after": kid_after},
            **({"label_info": state.meta["label_info"]} if "label_info" in state.meta else {})}  # the pickers' counts
    path = save_checkpoint(out_dir / "finetuned.safetensors", state.model_cfg, state.G_ema, None, state.D, meta=meta,
                           write_card=True)
    G_ema = copy.deepcopy(state.G_ema).cpu().eval().requires_grad_(False)
    D = copy.deepcopy(state.D).cpu().eval()
    ck = Checkpoint(state.model_cfg, G_ema, D=D, meta=read_metadata(path), path=path, sha256=file_sha256(path))
    return serve(ck, "your fine-tuned model", device), path


# ----------------------------------------------------------------------------------------------------------------
# The /finetune stream: what the page is sent while a run waits, runs and ends


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()  # an output the message leaves as it is (the app sends its framework's "no change")


@dataclass
class FinetuneMessage:
    """One message of the /finetune stream, its fields in the endpoint's output order. None clears an output,
    KEEP leaves it as it is."""

    status: str
    curves: Any = None  # loss curves (media.curves_frame)
    grid: Any = None  # fixed-seed samples, (H, W, 3) uint8
    compare: Any = None  # before/after strip, at the end
    checkpoint: str | None = None  # the tuned model's file, at the end
    kid: Any = None  # distance to the user's images (media.kid_frame)
    targets: Any = KEEP  # the user's images, sent while the run waits and starts
    warning: str | None = None  # shown beside the page, not an output

    def outputs(self, keep: Callable[[], Any]) -> tuple:
        """The seven output values, each KEEP replaced by a fresh `keep()` (the web framework's "no change")."""
        values = (self.status, self.curves, self.grid, self.compare, self.checkpoint, self.kid, self.targets)
        return tuple(keep() if v is KEEP else v for v in values)


def stream_finetune(sessions: Sessions, sid: str, job: Job, base: LoadedModel, plan: FinetunePlan,
                    device: torch.device) -> Iterator[FinetuneMessage]:
    """Run `plan` as session `sid`'s `job` (closed here) and say what the page shows: the place in line, then
    every step (curves each time; the grid and KID only when re-measured, so little goes out), then the result,
    which becomes the session's tuned model. FinetuneFailed if it stopped before a first step."""
    targets = media.target_strip(plan.dataset.images)
    last = None
    try:
        for pos in job.wait():
            yield FinetuneMessage(f"waiting for a free slot: position {pos} in line", targets=targets)
        if job.stop.is_set():
            yield FinetuneMessage("stopped before it started", targets=targets)
            return
        note = (" · this model draws by category and your images carry none, so every category learns your "
                "style (the pickers still work afterwards)") if base.labels.conditional else ""
        yield FinetuneMessage(f"running on {len(plan.dataset)} images{note}", targets=targets)
        sent_grid, sent_kid = None, 0
        for up in run_finetune(base, plan.dataset, plan.cfg, job.stop, sessions.workdir(sid, "finetune"), device,
                               seconds=plan.seconds):
            last = up
            if up.done:
                break
            grid = up.grid if up.grid is not sent_grid else KEEP
            kid = media.kid_frame(up.kid) if len(up.kid) != sent_kid else KEEP
            sent_grid, sent_kid = up.grid, len(up.kid)
            yield FinetuneMessage(up.status, media.curves_frame(up.history), grid, kid=kid)
    finally:
        job.close()
    if last is None or last.model is None:
        raise FinetuneFailed("fine-tuning stopped before its first step")
    sessions.set_tuned(sid, last.model)
    yield FinetuneMessage(last.status, media.curves_frame(last.history), last.grid, media.before_after(base, last.model),
                          str(last.checkpoint), media.kid_frame(last.kid), warning=last.error)
