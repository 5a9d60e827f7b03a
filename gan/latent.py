"""Latent-space utilities: seeds -> z -> ws, rendering, interpolation paths, style mixing."""
from __future__ import annotations

import numpy as np
import torch

from gan.images import to_uint8
from gan.labels import seeds_c
from gan.networks import NOISE_MODES, Generator


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The latent for a seed: NumPy's legacy MT19937 normal stream, as NVlabs' gen_images.py. Returns (1, z_dim).

    Legacy RandomState is frozen by NumPy's compatibility policy, so a seed means the same z on every machine.
    """
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2^32), got {seed}")
    return torch.from_numpy(np.random.RandomState(int(seed)).randn(1, z_dim)).float()


def z_from_seeds(seeds: list[int], z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) latents, one row per seed."""
    return torch.cat([z_from_seed(s, z_dim) for s in seeds], dim=0)


def check_params(psi: float, noise_mode: str) -> None:
    if not -2.0 <= psi <= 2.0:
        raise ValueError(f"psi must be in [-2, 2], got {psi}")
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


@torch.no_grad()
def seeds_to_ws(G: Generator, seeds: list[int], psi: float = 1.0, cutoff: int | None = None,
                c: torch.Tensor | None = None) -> torch.Tensor:
    """ws (len(seeds), num_ws, w_dim) for seeds (NVlabs-compatible z), truncated by psi (towards each label's centre).

    c (len(seeds), c_dim): the labels of a conditional G; None draws them per seed, every class equally often
    (gan.labels.seeds_c), so a conditional model rendered by seed alone shows all its categories."""
    device = next(G.parameters()).device
    z = z_from_seeds(seeds, G.z_dim).to(device)  # (B, z_dim)
    if G.c_dim and c is None:
        c = seeds_c(G.cfg, seeds)
    return G.mapping(z, c=None if c is None else c.to(device), psi=psi, cutoff=cutoff)


@torch.no_grad()
def render(G: Generator, ws: torch.Tensor, noise_mode: str = "const", batch: int = 32) -> np.ndarray:
    """ws (B, num_ws, w_dim) -> (B, H, W, 3) uint8, in chunks of `batch`."""
    device = next(G.parameters()).device
    out = [to_uint8(G.synthesis(ws[i : i + batch].to(device), noise_mode=noise_mode)) for i in range(0, len(ws), batch)]
    return np.concatenate(out, axis=0)


def mix_styles(ws_a: torch.Tensor, ws_b: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Replace layers [start, end) of ws_a by those of ws_b. Both (B, num_ws, w_dim)."""
    if not 0 <= start <= end <= ws_a.shape[1]:
        raise ValueError(f"layer range [{start}, {end}) outside [0, {ws_a.shape[1]}]")
    out = ws_a.clone()
    out[:, start:end] = ws_b[:, start:end]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Interpolation


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a, b (..., D); t (T,) -> (T, ..., D)."""
    t = t.view(-1, *([1] * a.ndim))
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dim (norms interpolated linearly). a, b (..., D); t (T,) -> (T, ..., D)."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / (na + eps), b / (nb + eps)
    omega = torch.acos((ua * ub).sum(-1, keepdim=True).clamp(-1 + eps, 1 - eps))  # (..., 1)
    so = torch.sin(omega)
    t = t.view(-1, *([1] * a.ndim))
    dirs = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so
    return dirs * (na + (nb - na) * t)


def keyframe_path(keys: torch.Tensor, frames_per_segment: int, method: str = "slerp", loop: bool = False) -> torch.Tensor:
    """Latents through keyframes. keys (K, ...) -> (T, ...), T = segments * frames_per_segment (+1 if not loop).

    Each segment includes its start and excludes its end; an open path ends on the last keyframe, a loop returns
    to the first (so the animation repeats seamlessly).
    """
    if keys.shape[0] < 2:
        raise ValueError("need at least two keyframes")
    if frames_per_segment < 1:
        raise ValueError("frames_per_segment must be >= 1")
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")
    fn = slerp if method == "slerp" else lerp
    ks = torch.cat([keys, keys[:1]]) if loop else keys
    t = torch.arange(frames_per_segment, dtype=keys.dtype) / frames_per_segment
    segs = [fn(ks[i], ks[i + 1], t) for i in range(len(ks) - 1)]
    if not loop:
        segs.append(ks[-1:])
    return torch.cat(segs, dim=0)


@torch.no_grad()
def interpolate_seeds(
    G: Generator,
    seeds: list[int],
    frames_per_segment: int = 24,
    method: str = "slerp",
    space: str = "z",
    loop: bool = False,
    psi: float = 1.0,
    noise_mode: str = "const",
    c: torch.Tensor | None = None,
) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 walking through seeds, interpolating in Z (then mapping) or in W.

    c (K, c_dim): each keyframe's labels for a conditional G (None: drawn per seed); in Z the labels blend linearly
    between keyframes, so a walk can cross categories and styles."""
    check_params(psi, noise_mode)
    return render(G, interpolation_ws(G, seeds, frames_per_segment, method, space, loop, psi, c), noise_mode)


@torch.no_grad()
def interpolation_ws(
    G: Generator,
    seeds: list[int],
    frames_per_segment: int = 24,
    method: str = "slerp",
    space: str = "z",
    loop: bool = False,
    psi: float = 1.0,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ws of interpolate_seeds' frames: (T, num_ws, w_dim), for a caller that renders them its own way."""
    if space not in ("z", "w"):
        raise ValueError(f"space must be 'z' or 'w', got {space!r}")
    device = next(G.parameters()).device
    z = z_from_seeds(seeds, G.z_dim)  # (K, z_dim)
    if G.c_dim and c is None:
        c = seeds_c(G.cfg, seeds)  # (K, c_dim)
    if space == "z":
        zs = keyframe_path(z, frames_per_segment, method, loop)  # (T, z_dim)
        cs = None if c is None else keyframe_path(c.float().cpu(), frames_per_segment, "lerp", loop).to(device)  # (T, c_dim)
        ws = G.mapping(zs.to(device), c=cs, psi=psi)  # (T, num_ws, w_dim)
    else:
        w = G.mapping(z.to(device), c=None if c is None else c.to(device), psi=psi)[:, 0].cpu()  # (K, w_dim)
        path = keyframe_path(w, frames_per_segment, method, loop)  # (T, w_dim)
        ws = path.unsqueeze(1).repeat(1, G.num_ws, 1)  # (T, num_ws, w_dim)
    return ws


def parse_seeds(spec: str, max_count: int = 10_000) -> list[int]:
    """'0-15' or '1,2,3' or '0-3,10' -> list of ints."""
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(part)
        except ValueError:
            raise ValueError(f"bad seed {part!r}: give whole numbers like 1,2,3 or a range like 0-15") from None
        if hi < lo:
            raise ValueError(f"bad seed range {part!r}: it ends before it starts")
        seeds.extend(range(lo, hi + 1))
        if len(seeds) > max_count:
            raise ValueError(f"too many seeds (> {max_count})")
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}")
    for s in seeds:
        if not 0 <= s < 2**32:
            raise ValueError(f"seed {s} outside [0, 2^32)")
    return seeds
