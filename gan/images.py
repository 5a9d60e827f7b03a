"""Conversions at the edges: img (B, 3, H, W) float in [-1, 1] <-> uint8 HWC arrays, grids, GIFs."""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """img (B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    assert img.ndim == 4 and img.shape[1] == 3, f"expected (B, 3, H, W), got {tuple(img.shape)}"
    x = (img.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> img (B, 3, H, W) float in [-1, 1] (the inverse of `to_uint8` up to rounding)."""
    x = torch.from_numpy(np.ascontiguousarray(images))  # (B, H, W, 3)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 0) -> np.ndarray:
    """(B, H, W, 3) uint8 -> one (rows*H, cols*W, 3) uint8 image, row-major, white padding."""
    B, H, W, C = images.shape
    cols = cols or math.ceil(math.sqrt(B))
    rows = math.ceil(B / cols)
    out = np.full((rows * (H + pad) - pad, cols * (W + pad) - pad, C), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (H + pad) : r * (H + pad) + H, c * (W + pad) : c * (W + pad) + W] = im
    return out


def to_uint8_grid(img: torch.Tensor, cols: int | None = None) -> np.ndarray:
    """img (B, 3, H, W) in [-1, 1] -> (rows*H, cols*W, 3) uint8 grid."""
    return grid(to_uint8(img), cols)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an (H, W, 3) uint8 image, for crisp display of small samples."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def gif_bytes(frames: list[np.ndarray] | np.ndarray, fps: float = 12.0, loop: bool = True) -> bytes:
    """(T, H, W, 3) uint8 frames -> animated GIF bytes."""
    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0 if loop else 1, disposal=1)
    return buf.getvalue()
