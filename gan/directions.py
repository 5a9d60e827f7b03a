"""Latent directions for sliders: SeFa (closed form from the style affines) and GANSpace (PCA of W).

Both give unit vectors in W (K, w_dim), sorted by importance, plus the standard deviation of sampled w along each
one, so a slider value of 1.0 means "one standard deviation of the model's own w distribution". An edit adds
alpha * std * direction to a chosen layer range [start, end) of ws: the full range is a W edit, a partial range a
W+ edit (only those layers' styles change).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gan.io import atomic_write_bytes, atomic_write_text
from gan.networks import Generator
from gan.paths import cache_dir

METHODS = ("sefa", "ganspace")


@dataclass
class Directions:
    method: str  # 'sefa' or 'ganspace'
    vectors: np.ndarray  # (K, w_dim) float32, unit rows, most important first
    values: np.ndarray  # (K,) SeFa eigenvalues of A^T A, or GANSpace variances of w along each component
    stds: np.ndarray  # (K,) std of sampled w along each direction (slider unit)
    explained: np.ndarray  # (K,) fraction of the eigenvalue/variance total
    layers: tuple[int, int] = (0, 0)  # SeFa: the ws layers whose affines were used; GANSpace: all
    checkpoint_sha256: str = ""
    seconds: float = 0.0  # time it took to compute
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.vectors)

    def labels(self) -> list[str]:
        unit = "eig" if self.method == "sefa" else "var"
        return [f"{self.method} {i}: {unit} {v:.3g} ({e:.1%})" for i, (v, e) in enumerate(zip(self.values, self.explained))]

    def save(self, path: str | Path) -> Path:
        """Write `<path>.npz` (arrays, no pickle) and `<path>.json` (the rest)."""
        path = Path(path).with_suffix("")
        import io

        buf = io.BytesIO()
        np.savez(buf, vectors=self.vectors, values=self.values, stds=self.stds, explained=self.explained)
        atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
        meta = {k: v for k, v in asdict(self).items() if k not in ("vectors", "values", "stds", "explained")}
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
        return path.with_suffix(".npz")

    @staticmethod
    def load(path: str | Path, w_dim: int | None = None) -> "Directions":
        path = Path(path).with_suffix("")
        try:
            with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("vectors", "values", "stds", "explained")}
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"cannot read directions from {path}.npz/.json: {e}") from None
        if arrays["vectors"].ndim != 2 or (w_dim is not None and arrays["vectors"].shape[1] != w_dim):
            raise ValueError(f"directions in {path} have shape {arrays['vectors'].shape}, model w_dim is {w_dim}")
        if meta.get("method") not in METHODS:
            raise ValueError(f"unknown directions method {meta.get('method')!r}")
        meta["layers"] = tuple(meta.get("layers", (0, 0)))
        return Directions(**arrays, **meta)


@torch.no_grad()
def sample_w(G: Generator, n: int, seed: int = 0, batch: int = 4096) -> torch.Tensor:
    """(n, w_dim) w from N(0, I) latents, no truncation."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=gen).to(device)
        out.append(G.mapping(z)[:, 0].float().cpu())  # (b, w_dim)
    return torch.cat(out)


def _stds_along(w: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    proj = (w - w.mean(0)) @ vectors.t()  # (n, K)
    return proj.std(dim=0)


@torch.no_grad()
def sefa(G: Generator, k: int = 16, layers: tuple[int, int] | None = None, n_std: int = 10_000) -> Directions:
    """SeFa (Shen & Zhou 2021): top eigenvectors of A^T A, A = column-normalised style-affine weights.

    `layers` = [start, end) over ws indices; the style layers (convs) in that range contribute their affines.
    """
    t0 = time.perf_counter()
    convs = G.style_layers()  # conv i reads ws[:, i]
    start, end = layers or (0, len(convs))
    if not 0 <= start < end <= len(convs):
        raise ValueError(f"layer range must satisfy 0 <= start < end <= {len(convs)}, got [{start}, {end})")
    A = torch.cat([convs[i].affine.weight.float().cpu() * convs[i].affine.weight_gain for i in range(start, end)])  # (sum C_in, w_dim)
    A = A / A.norm(dim=0, keepdim=True)
    eigvals, eigvecs = torch.linalg.eigh(A.t().double() @ A.double())  # ascending
    order = eigvals.argsort(descending=True)[:k]
    vectors = eigvecs[:, order].t().float()  # (K, w_dim)
    values = eigvals[order].float()
    stds = _stds_along(sample_w(G, n_std), vectors)
    return Directions(
        "sefa", vectors.numpy(), values.numpy(), stds.numpy(), (values / eigvals.sum()).float().numpy(),
        layers=(start, end), seconds=time.perf_counter() - t0, info={"n_std": n_std},
    )


@torch.no_grad()
def ganspace(G: Generator, k: int = 16, n: int = 100_000, seed: int = 0) -> Directions:
    """GANSpace (Härkönen et al. 2020): PCA of w over n sampled latents."""
    t0 = time.perf_counter()
    w = sample_w(G, n, seed=seed).double()  # (n, w_dim)
    wc = w - w.mean(0)
    cov = wc.t() @ wc / (n - 1)  # (w_dim, w_dim)
    var, vecs = torch.linalg.eigh(cov)
    order = var.argsort(descending=True)[:k]
    vectors = vecs[:, order].t().float()  # (K, w_dim)
    values = var[order].float()
    return Directions(
        "ganspace", vectors.numpy(), values.numpy(), values.clamp_min(0).sqrt().numpy(), (values / var.sum()).float().numpy(),
        layers=(0, G.num_ws), seconds=time.perf_counter() - t0, info={"n": n, "seed": seed},
    )


def compute(G: Generator, method: str, k: int = 16, **kw) -> Directions:
    if method == "sefa":
        return sefa(G, k=k, **kw)
    if method == "ganspace":
        return ganspace(G, k=k, **kw)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


_MEMORY: dict[tuple, Directions] = {}


def cached(G: Generator, sha256: str, method: str, k: int = 16, **kw) -> Directions:
    """Directions for a checkpoint hash: from memory, else from the disk cache, else computed and stored.

    A fine-tuned model has another hash, so its directions are computed afresh.
    """
    key = (sha256, method, k, tuple(sorted(kw.items())))
    if key in _MEMORY:
        return _MEMORY[key]
    name = f"{sha256[:16]}-{method}-k{k}" + "".join(f"-{a}{b}" for a, b in sorted(kw.items()))
    path = cache_dir() / name
    d = None
    if sha256 and path.with_suffix(".npz").exists():
        try:
            d = Directions.load(path, w_dim=G.w_dim)
        except ValueError:
            d = None  # a corrupt cache entry is recomputed
    if d is None:
        d = compute(G, method, k=k, **kw)
        d.checkpoint_sha256 = sha256
        if sha256:
            try:
                d.save(path)
            except OSError:
                pass  # a read-only cache is not an error
    _MEMORY[key] = d
    return d


def apply(
    ws: torch.Tensor,  # (B, num_ws, w_dim)
    directions: Directions,
    coeffs: list[float] | np.ndarray,  # (K,) slider values in standard deviations
    start: int = 0,  # first ws layer edited
    end: int | None = None,  # one past the last edited layer (None: all: a W edit)
) -> torch.Tensor:
    """ws + sum_k coeffs[k] * std_k * v_k on layers [start, end); other layers unchanged."""
    end = ws.shape[1] if end is None else end
    if not 0 <= start <= end <= ws.shape[1]:
        raise ValueError(f"layer range [{start}, {end}) outside [0, {ws.shape[1]}]")
    c = np.zeros(len(directions), dtype=np.float32)
    coeffs = np.asarray(coeffs, dtype=np.float32)[: len(directions)]
    c[: len(coeffs)] = coeffs
    delta = torch.from_numpy((c * directions.stds) @ directions.vectors).to(ws.device, ws.dtype)  # (w_dim,)
    out = ws.clone()
    out[:, start:end] += delta
    return out
