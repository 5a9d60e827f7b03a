"""Saving and continuing a run: the resume point (`state.safetensors`), an exact resume, and a warm start.

A run state holds G, G_ema, D, both Adam states, augment p, step, images seen and the RNG states, so a resumed run
continues bit for bit (same device type, one process). A warm start continues from exported weights (e.g. the shipped
checkpoint) when the run folder is gone: same history and image count, fresh Adam states.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gan.checkpoint import Checkpoint, load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from gan.config import ModelConfig, TrainConfig, from_dict, to_dict
from gan.discriminators import DiscriminatorSpec
from gan.distributed import Distributed
from gan.runtime import hardware_name
from gan.training import TrainState

# Settings that only say how long to run or how often to report; changing them does not change the model trained.
BOOKKEEPING_FIELDS = ("total_nimg", "steps", "sample_every", "checkpoint_every", "log_every", "num_threads", "grid_seeds",
                      "sample_every_s", "checkpoint_every_s")
# Metadata a continuation carries over: the run's dataset, surgery and settings history.
HISTORY_KEYS = ("dataset", "license", "surgery", "label_info", "train_changes", "warm_starts")


def save_state(state: TrainState, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write the run state (call on rank 0; every rank holds the same weights)."""
    extra = optimizer_to_tensors("opt_G", state.opt_G, state.G)
    extra.update(optimizer_to_tensors("opt_D", state.opt_D, state.D))
    extra["rng.gen"] = state.batches.gen.get_state()
    extra["rng.gen_aug"] = state.augment.gen.get_state()
    extra["rng.torch_cpu"] = torch.get_rng_state()
    if state.device.type == "cuda":
        extra["rng.torch_cuda"] = torch.cuda.get_rng_state(state.device)
    meta = {
        **state.meta, "train": to_dict(state.cfg), "step": state.step, "nimg": state.nimg, "aug_p": state.aug_p,
        "wall_s": round(state.wall_s, 1), "parent": state.parent,
        "hardware": hardware_name(state.device), "world_size": state.dist.world_size, "rng_device": state.device.type,
        "torch": torch.__version__, **(extra_meta or {}),
    }
    return save_checkpoint(path, state.model_cfg, state.G_ema, state.G, state.D, meta=meta, extra=extra)


def _restore_rng(state: TrainState, extra: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """The shared stream resumes exactly whenever the device type matches; the per-rank streams only when one
    process continues a one-process run on the same device type; else they are reseeded from the step."""
    same_device = meta.get("rng_device", "cpu") == state.device.type
    try:
        if not same_device:
            raise ValueError("generator states of another device type")
        state.batches.gen.set_state(extra["rng.gen"])
    except (KeyError, RuntimeError, ValueError):
        state.batches.reseed(state.step)
    alone = same_device and state.dist.world_size == 1 and int(meta.get("world_size", 1)) == 1
    if alone and "rng.gen_aug" in extra:
        state.augment.gen.set_state(extra["rng.gen_aug"])
        if "rng.torch_cpu" in extra:
            torch.set_rng_state(extra["rng.torch_cpu"])
        if "rng.torch_cuda" in extra and state.device.type == "cuda":
            torch.cuda.set_rng_state(extra["rng.torch_cuda"], state.device)
    else:
        state.seed_streams(state.step, shared=False)


def train_config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, list]:
    """{field: [old, new]} for every training setting a resume changes, bookkeeping fields left out."""
    a, b = to_dict(old), to_dict(new)
    return {k: [a.get(k), b[k]] for k in b if k not in BOOKKEEPING_FIELDS and a.get(k) != b[k]}


def _carry_history(state: TrainState, meta: dict[str, Any], saved_cfg: TrainConfig) -> None:
    """Keep the run's history, and note any setting this continuation changes (so the card describes the recipe)."""
    state.meta = {k: meta[k] for k in HISTORY_KEYS if k in meta}
    changed = train_config_changes(saved_cfg, state.cfg)
    if changed:
        state.meta["train_changes"] = [*state.meta.get("train_changes", []), {"at_nimg": state.nimg, "changed": changed}]


def load_state(path: str | Path, device: torch.device | str = "cpu", cfg: TrainConfig | None = None,
               dist: Distributed | None = None) -> TrainState:
    """Resume from a state written by `save_state` (optionally with a changed TrainConfig, e.g. a longer run), with
    any number of ranks."""
    ck = load_checkpoint(path, need_d=True)
    if ck.G is None:
        raise ValueError(f"{path} holds no G; it is not a run state")
    saved_cfg = from_dict(TrainConfig, ck.meta["train"])
    cfg = cfg or saved_cfg
    if DiscriminatorSpec.of_config(cfg) != DiscriminatorSpec.of_meta(ck.meta):
        raise ValueError(f"{path} trains a {DiscriminatorSpec.of_meta(ck.meta)} discriminator; a resume cannot change "
                         f"it (start a new run from its exported weights instead)")
    st = TrainState(ck.model_cfg, cfg, device=device, dist=dist)
    st.G.load_state_dict(ck.G.state_dict())
    st.G_ema.load_state_dict(ck.G_ema.state_dict())
    st.D.load_state_dict(ck.D.state_dict())
    optimizer_from_tensors("opt_G", st.opt_G, st.G, ck.extra)
    optimizer_from_tensors("opt_D", st.opt_D, st.D, ck.extra)
    st.step, st.nimg = int(ck.meta["step"]), int(ck.meta["nimg"])
    st.aug_p = float(ck.meta.get("aug_p", 0.0))
    st.wall_s = float(ck.meta.get("wall_s", 0.0))
    st.parent = ck.meta.get("parent")
    _restore_rng(st, ck.extra, ck.meta)
    _carry_history(st, ck.meta, saved_cfg)
    return st


def warm_start(ck: Checkpoint, cfg: TrainConfig, device: torch.device | str = "cpu",
               dist: Distributed | None = None) -> TrainState:
    """Continue a run from exported weights (G_ema + D, e.g. the shipped checkpoint) when its run state is gone.

    G starts from G_ema, as StyleGAN's resume-from-pickle does (or from the checkpoint's G when it holds one, e.g. the
    fp32 files a GPU run returns), and both Adam states start fresh; a D of another kind than cfg's starts fresh too.
    Images seen, augment p, wall time and the run's history carry over; `warm_starts` in the metadata records where
    it happened, so the card says the optimizer state was reset there.
    """
    if "nimg" not in ck.meta or "train" not in ck.meta:
        raise ValueError(f"{ck.path} has no training history (nimg, train); fine-tune it instead of continuing it")
    st = TrainState(ck.model_cfg, cfg, device=device, init=ck, dist=dist)
    st.parent = ck.meta.get("parent")  # the same run, not a fine-tune of it
    if ck.G is not None:
        st.G.load_state_dict(ck.G.state_dict())
    st.step, st.nimg = int(ck.meta.get("step", 0)), int(ck.meta["nimg"])
    st.seed_streams(st.step, shared=True)  # not a replay of the run's first batches
    if cfg.augment == "ada":  # the adapted p carries over; a fixed p is the config's
        st.aug_p = float(ck.meta.get("aug_p", cfg.aug_p))
    st.wall_s = float(ck.meta.get("wall_s", 0.0))
    _carry_history(st, ck.meta, from_dict(TrainConfig, ck.meta["train"]))
    reset = "Adam states" if ck.G is not None else "G from G_ema; Adam states"
    if DiscriminatorSpec.of_meta(ck.meta) != st.nets.d_spec:
        reset += f"; a fresh {st.nets.d_spec.kind} D"
    st.meta["warm_starts"] = [*st.meta.get("warm_starts", []),
                              {"at_nimg": st.nimg, "from_sha256": ck.sha256, "reset": reset}]
    return st


def new_or_resume(
    run_dir: str | Path, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device | str, resume: bool,
    init: str | Path | None = None, dist: Distributed | None = None,
) -> TrainState:
    """A fresh state, the one saved in run_dir (keeping the new cfg's length so a run can be extended), or a warm
    start from the exported checkpoint `init` (see `warm_start`)."""
    path = Path(run_dir) / "state.safetensors"
    if init is not None:
        if resume:
            raise ValueError("either resume the run folder or start from an init checkpoint, not both")
        if path.exists():
            raise FileExistsError(f"{path} exists; resume it (resume=True) or choose another run folder")
        ck = load_checkpoint(init, need_d=cfg.d_kind == "stylegan2")
        if to_dict(ck.model_cfg) != to_dict(model_cfg):
            raise ValueError(f"{init} holds a different model than the config describes; refusing to continue it")
        return warm_start(ck, cfg, device=device, dist=dist)
    if resume and path.exists():
        st = load_state(path, device=device, cfg=cfg, dist=dist)
        if to_dict(st.model_cfg) != to_dict(model_cfg):
            raise ValueError(f"{path} was trained with a different model config; refusing to resume")
        return st
    if resume:
        raise FileNotFoundError(f"resume=True but {path} does not exist")
    if path.exists():
        raise FileExistsError(f"{path} exists; resume it (resume=True) or choose another run folder")
    return TrainState(model_cfg, cfg, device=device, dist=dist)
