"""What the app shows or hands out besides single images: frame strips, GIF/MP4 animations, before/after strips,
and the tables its browser-drawn curves are made from."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan.images import gif_bytes, grid, to_uint8, upscale
from gan.labels import ANY
from gan.latent import check_params, interpolation_ws, seeds_to_ws
from gan.runtime import default_noise_mode
from studio.models import LoadedModel
from studio.render_queue import STRIP, RenderQueue, render_ws

DISPLAY_SCALE = 4  # animations: 64 px frames upscaled 4x, nearest neighbour (explore images are upscaled by CSS)
MAX_KEYFRAMES = 12
MAX_FRAMES = 240
PREVIEW_SEEDS = tuple(range(8))  # fixed seeds of the fine-tune grid and the before/after strip
# The Interpolate tab's starting values, which are also the /interpolate API's defaults (the API takes them from the
# components; the handler declares the same ones).
INTERPOLATE_DEFAULTS: dict[str, Any] = dict(seeds="1,2,3,4", frames_per_segment=16, method="slerp", space="w", loop=True,
                                            psi=0.7, fps=12)


# ----------------------------------------------------------------------------------------------------------------
# Animations


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
    noise_mode: str, fps: float, out_dir: Path, category: str = ANY, style: str = ANY, queue: RenderQueue | None = None,
) -> Animation:
    """A keyframe walk through `seeds` as a frame strip, a GIF and a video. Raises ValueError on bad settings.

    The frames go through `queue` when given (the app's render queue: one thread, a piece at a time between other
    users' pictures), else they render in this thread; the pixels are the same either way."""
    if not 2 <= len(seeds) <= MAX_KEYFRAMES:
        raise ValueError(f"give between 2 and {MAX_KEYFRAMES} keyframe seeds, got {len(seeds)}")
    segments = len(seeds) if loop else len(seeds) - 1
    if not 1 <= frames_per_segment or segments * frames_per_segment > MAX_FRAMES:
        raise ValueError(f"frames per segment must be >= 1 and the total at most {MAX_FRAMES}")
    if not 1 <= fps <= 60:
        raise ValueError("fps must be within [1, 60]")
    c = model.labels.c_for_seeds(seeds, category, style)  # (K, c_dim): each keyframe's labels, or None
    check_params(psi, noise_mode)
    ws = interpolation_ws(model.G, seeds, frames_per_segment, method, space, loop, psi, c=c)  # (T, num_ws, w_dim)
    frames = render_ws(model, ws, noise_mode, queue, priority=STRIP)  # (T, H, W, 3)
    big = np.stack([upscale(f, DISPLAY_SCALE) for f in frames])  # (T, 4H, 4W, 3)
    out_dir.mkdir(parents=True, exist_ok=True)
    gif = out_dir / "interpolation.gif"
    gif.write_bytes(gif_bytes(big, fps=fps, loop=True))
    video = encode_video(big, out_dir / "interpolation", fps)
    pick = np.linspace(0, len(frames) - 1, num=min(len(frames), 12)).round().astype(int)
    strip = upscale(grid(frames[pick], cols=len(pick), pad=2), 2)
    return Animation(strip, gif, video, len(frames))


# ----------------------------------------------------------------------------------------------------------------
# Before / after and figures


@torch.no_grad()
def before_after(base: LoadedModel, tuned: LoadedModel, seeds: tuple[int, ...] = PREVIEW_SEEDS, psi: float = 0.7) -> np.ndarray:
    """Two rows, same seeds: base model on top, fine-tuned below. (2*H*2, n*W*2, 3) uint8."""
    rows = []
    for m in (base, tuned):
        noise = default_noise_mode(m.checkpoint.meta)
        rows.append(to_uint8(m.G.synthesis(seeds_to_ws(m.G, list(seeds), psi=psi), noise_mode=noise)))
    return upscale(grid(np.concatenate(rows), cols=len(seeds), pad=2), 2)


def curves_frame(history: list[dict[str, float]], keys: tuple[str, ...] = ("loss_G", "loss_D")):
    """Long-form table (step, value, series) of the training curves, for a browser-drawn gr.LinePlot.

    Long runs are thinned to at most ~300 points per series, so an update stays a few kilobytes."""
    import pandas as pd

    points = history[:: max(1, -(-len(history) // 300))]  # ceil: at most 300
    if history and points[-1] is not history[-1]:
        points.append(history[-1])
    rows = [{"step": h["step"], "value": float(h[k]), "series": k} for h in points for k in keys if k in h]
    return pd.DataFrame(rows, columns=["step", "value", "series"])


def kid_frame(kid: list[dict[str, float]]):
    """(seconds, KID) of the live distance to the user's images, for a gr.LinePlot."""
    import pandas as pd

    return pd.DataFrame([{"seconds": k["seconds"], "KID": k["kid"]} for k in kid], columns=["seconds", "KID"])


def target_strip(dataset_images: np.ndarray, n: int = 8) -> np.ndarray:
    """Up to n of the user's images side by side, at the size the grid shows samples. (H*2, n*W*2, 3) uint8."""
    pick = np.linspace(0, len(dataset_images) - 1, num=min(n, len(dataset_images))).round().astype(int)
    return upscale(grid(dataset_images[pick], cols=len(pick), pad=2), 2)
