"""A fine-tuning run as the app sees it: a stream of UI-ready updates over the training engine, ending with the
tuned model in memory (ready to explore) and its file written once (for download)."""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from gan.checkpoint import Checkpoint, read_metadata, save_checkpoint
from gan.config import TrainConfig
from gan.dataset import ImageDataset
from gan.evaluate import kid_to_target
from gan.images import upscale
from gan.io import file_sha256
from gan.training import TrainState, train
from studio.media import PREVIEW_SEEDS
from studio.models import LoadedModel, serve

MAX_FINETUNE_IMAGES = 500


@dataclass
class FinetuneUpdate:
    """One UI refresh of a fine-tuning run."""

    status: str  # progress line: step, images/s, ETA, augment p
    history: list[dict[str, float]]  # one entry per step: step, loss_G, loss_D, D_real, D_fake, aug_p
    grid: np.ndarray | None  # (H, W, 3) uint8 fixed-seed samples, upscaled
    done: bool = False
    model: LoadedModel | None = None  # the tuned model, on the last update
    checkpoint: Path | None = None  # its lean file (G_ema + D + card), on the last update
    error: str | None = None


def finetune_config(n_images: int, **overrides) -> TrainConfig:
    """The shared fine-tuning recipe (`TrainConfig.finetune_defaults`, which validates `overrides`) with the app's
    reporting: a grid a few times per run, no intermediate run states, the preview seeds."""
    steps = int(overrides.get("steps") or TrainConfig.finetune_defaults().steps)
    return TrainConfig.finetune_defaults(n_images, **overrides, sample_every=max(1, min(10, steps // 5)),
                                         checkpoint_every=0, grid_seeds=PREVIEW_SEEDS)


def run_finetune(base: LoadedModel, dataset: ImageDataset, cfg: TrainConfig, stop: threading.Event, out_dir: Path,
                 device: torch.device | str = "cpu") -> Iterator[FinetuneUpdate]:
    """Fine-tune `base` on `dataset`, yielding an update after every step; the last one carries the tuned model."""
    if len(dataset) > MAX_FINETUNE_IMAGES:
        raise ValueError(f"at most {MAX_FINETUNE_IMAGES} images, got {len(dataset)}")
    if base.checkpoint.D is None:
        raise ValueError("this model has no discriminator, so it cannot be fine-tuned")
    kid_before = kid_to_target(base.G, dataset)
    state = TrainState(base.checkpoint.model_cfg, cfg, device=device, init=base.checkpoint)
    history: list[dict[str, float]] = []
    grid_img = None
    for ev in train(state, dataset, run_dir=out_dir, stop=stop):
        if ev.kind == "sample":
            grid_img = upscale(ev.grid, 2)
        elif ev.kind == "step":
            history.append({"step": ev.step, "aug_p": ev.aug_p, **ev.losses})
            eta = f", ETA {ev.eta_s:.0f} s" if ev.eta_s is not None else ""
            yield FinetuneUpdate(f"step {ev.step}/{cfg.steps} · {ev.img_per_s:.1f} img/s{eta} · augment p {ev.aug_p:.2f}",
                                 history, grid_img)
        elif ev.kind in ("done", "stopped", "error"):
            kid_after = kid_to_target(state.G_ema.eval(), dataset)
            model, path = _export(state, base, dataset, ev.kind, ev.nimg, ev.step, kid_before, kid_after, out_dir)
            if ev.kind == "error":
                yield FinetuneUpdate(f"stopped at step {ev.step}: {ev.message}", history, grid_img, True, model, path,
                                     ev.message)
                return
            word = "finished" if ev.kind == "done" else "stopped"
            kid = f" · KID to your images {kid_before:.3f} → {kid_after:.3f} (lower is closer)" if kid_before is not None else ""
            yield FinetuneUpdate(f"{word} at step {ev.step} ({ev.nimg} images){kid}", history, grid_img, True, model, path)
            return


def _export(state: TrainState, base: LoadedModel, dataset: ImageDataset, end: str, nimg: int, step: int,
            kid_before: float | None, kid_after: float | None, out_dir: Path) -> tuple[LoadedModel, Path]:
    """Write the tuned model's lean file once and wrap the same weights for serving (nothing is read back)."""
    meta = {"dataset": dataset.name, "license": dataset.license, "nimg": nimg, "step": step,
            "default_noise_mode": state.grid_noise_mode, "parent": state.parent, "train": state.cfg.__dict__,
            "finetune_end": end, "metrics": {"kid_to_target_before": kid_before, "kid_to_target_after": kid_after}}
    path = save_checkpoint(out_dir / "finetuned.safetensors", state.model_cfg, state.G_ema, None, state.D, meta=meta,
                           write_card=True)
    G_ema = copy.deepcopy(state.G_ema).cpu().eval().requires_grad_(False)
    D = copy.deepcopy(state.D).cpu().eval()
    ck = Checkpoint(state.model_cfg, G_ema, D=D, meta=read_metadata(path), path=path, sha256=file_sha256(path))
    return serve(ck, "your fine-tuned model", base.G.w_avg.device), path
