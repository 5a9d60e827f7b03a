"""What the web app does, as plain functions over the library (app.py only lays out and wires events).

- `ModelStore`: the shipped model (read-only, shared) and per-session fine-tuned models (one user's switch never
  affects another's), with a TTL so abandoned sessions free their memory.
- Explore: render a seed with truncation, noise mode, direction sliders on a layer range and style mixing;
  the explore state round-trips through JSON and URL query parameters.
- Interpolate: keyframe walks to a frame strip, a GIF and an MP4 (WebP where ffmpeg is missing).
- Fine-tune: a generator of UI-ready progress (loss history, sample grid, status) over the training engine.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from gan import directions as dirs
from gan.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from gan.config import TrainConfig
from gan.dataset import ImageDataset
from gan.defaults import default_noise_mode, resolve_checkpoint
from gan.images import from_uint8, gif_bytes, grid, to_uint8, upscale
from gan.latent import check_params, interpolate_seeds, mix_styles, seeds_to_ws
from gan.networks import Generator
from gan.training import TrainState, train

_PROJECTION_IDS = itertools.count(1)
NUM_SLIDERS = 6  # direction sliders shown in the Explore tab
SLIDER_RANGE = 3.0  # +- standard deviations
DISPLAY_SCALE = 4  # animations and grids: 64 px upscaled 4x, nearest neighbour (explore images are upscaled by CSS)
MAX_KEYFRAMES = 12
MAX_FRAMES = 240
MAX_FINETUNE_IMAGES = 500
MAX_FINETUNE_STEPS = 2000
PREVIEW_SEEDS = tuple(range(8))  # fixed seeds of the fine-tune grid and before/after


@dataclass
class LoadedModel:
    """A generator ready to render, with what identifies it."""

    label: str  # shown in the UI
    G: Generator  # G_ema, eval mode, on the serving device
    checkpoint: Checkpoint  # CPU copy with D (for fine-tuning) and metadata
    sha256: str  # identifies the weights (directions are cached by it)
    path: Path | None = None  # file on disk (downloadable)

    @property
    def num_ws(self) -> int:
        return self.G.num_ws


class ModelStore:
    """The shared base model plus per-session overrides (fine-tuned models), thread-safe, with a TTL."""

    def __init__(self, checkpoint: str | Path | None = None, device: torch.device | str = "cpu", ttl_s: float = 3600):
        self.device = torch.device(device)
        ck = resolve_checkpoint(checkpoint)
        self.base = self._wrap(ck, label=f"shipped: {Path(ck.path).name}")
        self._sessions: dict[str, tuple[LoadedModel, float]] = {}
        self._projections: dict[str, tuple[Projection, float]] = {}
        self._lock = threading.Lock()
        self.ttl_s = ttl_s

    def _wrap(self, ck: Checkpoint, label: str) -> LoadedModel:
        G = copy.deepcopy(ck.G_ema).to(self.device).eval().requires_grad_(False)
        if self.device.type == "cpu":
            G = G.to(memory_format=torch.channels_last)  # ~20% faster batch-1 synthesis on CPU
        return LoadedModel(label, G, ck, ck.sha256, ck.path)

    def load(self, path: str | Path, label: str) -> LoadedModel:
        """A checkpoint file as a LoadedModel on the serving device (not registered to any session)."""
        return self._wrap(load_checkpoint(path), label)

    def get(self, session: str | None) -> LoadedModel:
        with self._lock:
            if session and session in self._sessions:
                model, _ = self._sessions[session]
                self._sessions[session] = (model, time.monotonic())
                return model
        return self.base

    def use_checkpoint(self, session: str, path: str | Path, label: str) -> LoadedModel:
        """Switch this session to the checkpoint at `path` (e.g. its fine-tune result)."""
        model = self.load(path, label)
        with self._lock:
            self._sessions[session] = (model, time.monotonic())
        return model

    def reset(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    def forget(self, session: str) -> None:
        """Drop everything held for a session (model override and inverted image)."""
        with self._lock:
            self._sessions.pop(session, None)
            self._projections.pop(session, None)

    def set_projection(self, session: str, ws: torch.Tensor, model: LoadedModel) -> "Projection":
        with self._lock:
            proj = Projection(next(_PROJECTION_IDS), ws.detach().cpu(), model.sha256)
            self._projections[session] = (proj, time.monotonic())
        return proj

    def get_projection(self, session: str | None) -> "Projection | None":
        with self._lock:
            item = self._projections.get(session or "")
            return item[0] if item else None

    def prune(self) -> int:
        """Forget sessions idle for longer than the TTL. Returns how many were dropped."""
        now = time.monotonic()
        with self._lock:
            old = [s for s, (_, t) in self._sessions.items() if now - t > self.ttl_s]
            for s in old:
                del self._sessions[s]
            for s in [s for s, (_, t) in self._projections.items() if now - t > self.ttl_s]:
                del self._projections[s]
        return len(old)


# ----------------------------------------------------------------------------------------------------------------
# Explore


@dataclass
class Projection:
    """An uploaded image inverted into a session's model."""

    id: int  # unique in this process (part of the render memo key, shared by all sessions)
    ws: torch.Tensor  # (1, num_ws, w_dim), CPU
    model_sha256: str  # the model it was inverted into


@dataclass
class ExploreState:
    source: str = "seed"  # 'seed', or 'image': start from the session's inverted image
    seed: int = 0
    psi: float = 0.7
    noise_mode: str = "const"
    method: str = "sefa"
    layer_start: int = 0
    layer_end: int = 10
    coeffs: list[float] = field(default_factory=lambda: [0.0] * NUM_SLIDERS)
    mix_seed: int = 1
    mix_start: int = 0
    mix_end: int = 0  # empty range: no mixing

    def validate(self, num_ws: int) -> "ExploreState":
        """Raise ValueError on values the server must not accept; clamp layer ranges to the model."""
        if not 0 <= int(self.seed) < 2**32 or not 0 <= int(self.mix_seed) < 2**32:
            raise ValueError("seed must be an integer in [0, 4294967295]")
        check_params(float(self.psi), self.noise_mode)
        if self.source not in ("seed", "image"):
            raise ValueError("source must be 'seed' or 'image'")
        if self.method not in dirs.METHODS:
            raise ValueError(f"method must be one of {dirs.METHODS}")
        if len(self.coeffs) > NUM_SLIDERS or any(not math.isfinite(c) or abs(c) > 10 for c in self.coeffs):
            raise ValueError(f"at most {NUM_SLIDERS} slider values, each within +-10")
        self.seed, self.mix_seed, self.psi = int(self.seed), int(self.mix_seed), float(self.psi)
        self.coeffs = [float(c) for c in self.coeffs] + [0.0] * (NUM_SLIDERS - len(self.coeffs))
        clamp = lambda v: max(0, min(int(v), num_ws))  # noqa: E731
        self.layer_start, self.layer_end = clamp(self.layer_start), clamp(self.layer_end)
        self.mix_start, self.mix_end = clamp(self.mix_start), clamp(self.mix_end)
        if self.layer_end < self.layer_start:
            self.layer_start, self.layer_end = self.layer_end, self.layer_start
        if self.mix_end < self.mix_start:
            self.mix_start, self.mix_end = self.mix_end, self.mix_start
        return self

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    @staticmethod
    def from_json(text: str) -> "ExploreState":
        try:
            d = json.loads(text)
            assert isinstance(d, dict)
            known = set(ExploreState.__dataclass_fields__)
            return ExploreState(**{k: v for k, v in d.items() if k in known})
        except (json.JSONDecodeError, AssertionError, TypeError) as e:
            raise ValueError(f"not an explore-state JSON: {e}") from None

    def to_query(self) -> str:
        """URL parameters (an inverted image cannot travel in a link: the link shows the seed)."""
        q = {"seed": self.seed, "psi": f"{self.psi:g}", "noise": self.noise_mode, "method": self.method,
             "layers": f"{self.layer_start}-{self.layer_end}", "c": ",".join(f"{c:g}" for c in self.coeffs)}
        if self.mix_end > self.mix_start:
            q.update(mix=self.mix_seed, mixlayers=f"{self.mix_start}-{self.mix_end}")
        return "&".join(f"{k}={v}" for k, v in q.items())

    @staticmethod
    def from_query(params: dict[str, str], default: "ExploreState | None" = None) -> "ExploreState":
        """Query parameters (seed, psi, noise, method, layers=a-b, c=1,0,-2, mix, mixlayers) -> state."""
        st = ExploreState(**(default or ExploreState()).__dict__)
        try:
            if "seed" in params:
                st.seed = int(params["seed"])
            if "psi" in params:
                st.psi = float(params["psi"])
            if "noise" in params:
                st.noise_mode = params["noise"]
            if "method" in params:
                st.method = params["method"]
            if "layers" in params:
                st.layer_start, st.layer_end = (int(v) for v in params["layers"].split("-"))
            if "c" in params:
                st.coeffs = [float(v) for v in params["c"].split(",") if v.strip()]
            if "mix" in params:
                st.mix_seed = int(params["mix"])
            if "mixlayers" in params:
                st.mix_start, st.mix_end = (int(v) for v in params["mixlayers"].split("-"))
        except ValueError as e:
            raise ValueError(f"bad link parameter: {e}") from None
        return st


def directions_for(model: LoadedModel, method: str) -> dirs.Directions:
    return dirs.cached(model.G, model.sha256, method, k=NUM_SLIDERS)


_RENDERED: "OrderedDict[tuple, np.ndarray]" = OrderedDict()  # (model sha, state) -> image: a slider click fires
_RENDER_CACHE_SIZE = 512  # both `input` and `release` with the same value; the second is served from here
_render_lock = threading.Lock()


def render_explore(model: LoadedModel, st: ExploreState, projection: Projection | None = None) -> np.ndarray:
    """One image (H, W, 3) uint8 at the model's resolution for an explore state (validated here), memoised.

    It is sent at native size (a 64 px PNG encodes in well under a millisecond) and the page upscales it crisply.
    """
    st.validate(model.num_ws)
    if st.source == "image":
        if projection is None:
            raise ValueError("no inverted image yet: upload one under 'Invert your image' first")
        if projection.model_sha256 != model.sha256:
            raise ValueError("the inverted image belongs to another model; invert it again for this one")
    key = (model.sha256, projection.id if st.source == "image" else 0, json.dumps(st.__dict__, sort_keys=True))
    with _render_lock:
        if key in _RENDERED:
            _RENDERED.move_to_end(key)
            return _RENDERED[key]
    img = _render_explore(model, st, projection)
    if st.noise_mode != "random":  # random noise must give a new image every time
        with _render_lock:
            _RENDERED[key] = img
            while len(_RENDERED) > _RENDER_CACHE_SIZE:
                _RENDERED.popitem(last=False)
    return img


@torch.inference_mode()
def _render_explore(model: LoadedModel, st: ExploreState, projection: Projection | None) -> np.ndarray:
    """Render a validated explore state: seed -> ws, style mixing, direction edits, synthesis -> (H, W, 3) uint8."""
    if st.source == "image":
        ws = model.G.w_avg.lerp(projection.ws.to(model.G.w_avg.device), st.psi)  # (1, num_ws, w_dim)
    else:
        ws = seeds_to_ws(model.G, [st.seed], psi=st.psi)  # (1, num_ws, w_dim)
    if st.mix_end > st.mix_start:
        ws = mix_styles(ws, seeds_to_ws(model.G, [st.mix_seed], psi=st.psi), st.mix_start, st.mix_end)
    if any(c != 0 for c in st.coeffs):
        ws = dirs.apply(ws, directions_for(model, st.method), st.coeffs, st.layer_start, st.layer_end)
    img = model.G.synthesis(ws, noise_mode=st.noise_mode)  # (1, 3, H, W)
    return to_uint8(img)[0]


def slider_labels(model: LoadedModel, method: str) -> list[str]:
    d = directions_for(model, method)
    return d.labels() + [f"{method} {i}: (none)" for i in range(len(d), NUM_SLIDERS)]


# ----------------------------------------------------------------------------------------------------------------
# Interpolate


@dataclass
class Animation:
    strip: np.ndarray  # (H, W * n, 3) uint8, a sample of the frames side by side
    gif: Path
    video: Path  # .mp4 with ffmpeg, else animated .webp
    frames: int


def encode_video(frames: np.ndarray, path: Path, fps: float) -> Path:
    """(T, H, W, 3) uint8 -> H.264 MP4 via ffmpeg if it is installed, else an animated WebP. Returns the path."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        T, H, W, _ = frames.shape
        out = path.with_suffix(".mp4")
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", f"{fps}",
               "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(out)]
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, timeout=120)
        if proc.returncode == 0:
            return out
    from PIL import Image

    out = path.with_suffix(".webp")
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(out, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0, lossless=True)
    return out


def make_animation(
    model: LoadedModel, seeds: list[int], frames_per_segment: int, method: str, space: str, loop: bool, psi: float,
    noise_mode: str, fps: float, out_dir: Path,
) -> Animation:
    if not 2 <= len(seeds) <= MAX_KEYFRAMES:
        raise ValueError(f"give between 2 and {MAX_KEYFRAMES} keyframe seeds, got {len(seeds)}")
    segments = len(seeds) if loop else len(seeds) - 1
    if not 1 <= frames_per_segment or segments * frames_per_segment > MAX_FRAMES:
        raise ValueError(f"frames per segment must be >= 1 and the total at most {MAX_FRAMES}")
    if not 1 <= fps <= 60:
        raise ValueError("fps must be within [1, 60]")
    frames = interpolate_seeds(model.G, seeds, frames_per_segment, method, space, loop, psi, noise_mode)  # (T, H, W, 3)
    big = np.stack([upscale(f, DISPLAY_SCALE) for f in frames])
    out_dir.mkdir(parents=True, exist_ok=True)
    gif = out_dir / "interpolation.gif"
    gif.write_bytes(gif_bytes(big, fps=fps, loop=True))
    video = encode_video(big, out_dir / "interpolation", fps)
    pick = np.linspace(0, len(frames) - 1, num=min(len(frames), 12)).round().astype(int)
    strip = upscale(grid(frames[pick], cols=len(pick), pad=2), 2)
    return Animation(strip, gif, video, len(frames))


# ----------------------------------------------------------------------------------------------------------------
# Invert


MAX_INVERT_STEPS = 1000


def invert_image(model: LoadedModel, path: str | Path, steps: int, wplus_steps: int, stop: threading.Event | None = None):
    """Load an uploaded image safely and yield projector events (see gan.projector)."""
    from gan.dataset import load_images
    from gan.projector import project

    if not 10 <= steps + wplus_steps <= MAX_INVERT_STEPS or steps < 1:
        raise ValueError(f"steps must be >= 1 and steps + W+ steps within [10, {MAX_INVERT_STEPS}]")
    R = model.checkpoint.model_cfg.resolution
    ds = load_images([path], size=R, name="upload")  # safe decode: size caps, corrupt files -> DatasetError
    target = from_uint8(ds.images[:1])  # (1, 3, R, R)
    if model.G.w_avg.is_cuda:
        G, D = model.G, copy.deepcopy(model.checkpoint.D).to(model.G.w_avg.device) if model.checkpoint.D else None
    else:  # the CPU fp32 copy in contiguous format: gradients through the channels-last serving copy are slower
        G, D = model.checkpoint.G_ema, model.checkpoint.D
    with torch.enable_grad():
        yield from project(G, target.to(G.w_avg.device), steps=steps, wplus_steps=wplus_steps, D=D,
                           feature_weight=0.05, frame_every=10, stop=stop)


def curve_figure(values: list[float], title: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.4), dpi=90)
    ax.plot(range(1, len(values) + 1), values)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Fine-tune


@dataclass
class FinetuneUpdate:
    """One UI refresh of a fine-tuning run."""

    status: str  # progress line: step, images/s, ETA, augment p
    history: list[dict[str, float]]  # one entry per step: step, loss_G, loss_D, D_real, D_fake, aug_p
    grid: np.ndarray | None  # (H, W, 3) uint8 fixed-seed samples, upscaled
    done: bool = False
    checkpoint: Path | None = None  # lean checkpoint (G_ema + D + card) when done
    error: str | None = None


def finetune_config(steps: int, lr: float, augment: str, freeze_mapping: bool, freeze_d_blocks: int, n_images: int, batch: int = 8,
                    xflip: bool = False) -> TrainConfig:
    if not 1 <= steps <= MAX_FINETUNE_STEPS:
        raise ValueError(f"steps must be within [1, {MAX_FINETUNE_STEPS}]")
    if not 1e-5 <= lr <= 1e-2:
        raise ValueError("learning rate must be within [1e-5, 1e-2]")
    if augment not in ("ada", "fixed", "none"):
        raise ValueError("augmentation must be 'ada', 'fixed' or 'none'")
    return TrainConfig.finetune_defaults(
        n_images, steps=int(steps), lr_g=lr, lr_d=lr, augment=augment, freeze_mapping=bool(freeze_mapping),
        freeze_d_blocks=int(freeze_d_blocks), batch=min(batch, max(2, n_images)), sample_every=max(1, min(10, steps // 5)),
        checkpoint_every=0, grid_seeds=PREVIEW_SEEDS, xflip=bool(xflip),
    )


def run_finetune(
    base: LoadedModel, dataset: ImageDataset, cfg: TrainConfig, stop: threading.Event, out_dir: Path,
    device: torch.device | str = "cpu",
) -> Iterator[FinetuneUpdate]:
    """Fine-tune `base` on `dataset`, yielding an update after every step. Ends with a saved lean checkpoint."""
    if len(dataset) > MAX_FINETUNE_IMAGES:
        raise ValueError(f"at most {MAX_FINETUNE_IMAGES} images, got {len(dataset)}")
    if base.checkpoint.D is None:
        raise ValueError("this model has no discriminator, so it cannot be fine-tuned")
    from gan.evaluate import kid_to_target

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
            yield FinetuneUpdate(f"step {ev.step}/{cfg.steps} · {ev.img_per_s:.1f} img/s{eta} · augment p {ev.aug_p:.2f}", history, grid_img)
        elif ev.kind in ("done", "stopped", "error"):
            path = out_dir / "finetuned.safetensors"
            kid_after = kid_to_target(state.G_ema.eval(), dataset)
            meta = {"dataset": dataset.name, "license": dataset.license, "nimg": ev.nimg, "step": ev.step,
                    "default_noise_mode": state.grid_noise_mode,
                    "parent": state.parent, "train": state.cfg.__dict__, "finetune_end": ev.kind,
                    "metrics": {"kid_to_target_before": kid_before, "kid_to_target_after": kid_after}}
            save_checkpoint(path, state.model_cfg, state.G_ema, None, state.D, meta=meta, write_card=True)
            if ev.kind == "error":
                yield FinetuneUpdate(f"stopped at step {ev.step}: {ev.message}", history, grid_img, True, path, ev.message)
                return
            word = "finished" if ev.kind == "done" else "stopped"
            kid = f" · KID to your images {kid_before:.3f} → {kid_after:.3f} (lower is closer)" if kid_before is not None else ""
            yield FinetuneUpdate(f"{word} at step {ev.step} ({ev.nimg} images){kid}", history, grid_img, True, path)
            return


def loss_figure(history: list[dict[str, float]]):
    """Matplotlib figure: G and D losses; D(real), D(fake) and augment p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 2.8), dpi=90)
    steps = [h["step"] for h in history]
    for key, ax in (("loss_G", a1), ("loss_D", a1), ("D_real", a2), ("D_fake", a2)):
        ax.plot(steps, [h.get(key, float("nan")) for h in history], label=key)
    a2b = a2.twinx()
    a2b.plot(steps, [h.get("aug_p", 0) for h in history], "k:", label="augment p")
    a2b.set_ylim(0, 1)
    a1.set_title("losses")
    a2.set_title("D logits (and augment p, dotted)")
    for ax in (a1, a2):
        ax.set_xlabel("step")
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@torch.no_grad()
def before_after(base: LoadedModel, tuned: LoadedModel, seeds: tuple[int, ...] = PREVIEW_SEEDS, psi: float = 0.7) -> np.ndarray:
    """Two rows, same seeds: base model on top, fine-tuned below. (2*H*2, n*W*2, 3) uint8."""
    rows = []
    for m in (base, tuned):
        noise = default_noise_mode(m.checkpoint.meta)
        rows.append(to_uint8(m.G.synthesis(seeds_to_ws(m.G, list(seeds), psi=psi), noise_mode=noise)))
    return upscale(grid(np.concatenate(rows), cols=len(seeds), pad=2), 2)


def new_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"gan-studio-{prefix}-"))

