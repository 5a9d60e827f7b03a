"""Distribution metrics over a pluggable feature space, in float64: Fréchet distance, KID, precision/recall.

    real = FeatureSet(); real.add(feats)    # stream batches of (B, D) features
    fd = frechet_distance(real, fake); kid = kid_score(real.features, fake.features); pr = precision_recall(...)

FD is biased upwards for small sets and unreliable below ~2k samples; compare only figures computed with the same
sample counts, next to the real-vs-real floor (two disjoint halves of the data).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class FeatureSet:
    """Streaming mean/covariance (float64) plus the raw features (for KID and precision/recall)."""

    features_list: list[torch.Tensor] = field(default_factory=list)

    def add(self, feats: torch.Tensor) -> None:
        assert feats.ndim == 2, f"features must be (B, D), got {tuple(feats.shape)}"
        self.features_list.append(feats.detach().to("cpu", torch.float64))

    @property
    def features(self) -> torch.Tensor:
        return torch.cat(self.features_list) if self.features_list else torch.zeros(0, 0, dtype=torch.float64)

    def __len__(self) -> int:
        return sum(len(f) for f in self.features_list)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features
        if len(x) < 2:
            raise ValueError("need at least 2 samples for a covariance")
        mu = x.mean(0)
        xc = x - mu
        return mu, xc.t() @ xc / (len(x) - 1)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.t()


def frechet_distance_from_stats(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), with symmetric eigendecompositions (float64)."""
    mu1, s1, mu2, s2 = (t.to(torch.float64) for t in (mu1, s1, mu2, s2))
    r1 = _sqrtm_psd(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * cross)


def frechet_distance(a: FeatureSet, b: FeatureSet) -> float:
    return frechet_distance_from_stats(*a.stats(), *b.stats())


def kid_score(real: torch.Tensor, fake: torch.Tensor, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al.): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3.

    Averaged over `num_subsets` random subsets of m = min(subset_size, n_real, n_fake). Returns (mean, std).
    """
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    d = real.shape[1]
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(num_subsets):
        x = fake[torch.randperm(len(fake), generator=gen)[:m]]
        y = real[torch.randperm(len(real), generator=gen)[:m]]
        kxx = (x @ x.t() / d + 1) ** 3
        kyy = (y @ y.t() / d + 1) ** 3
        kxy = (x @ y.t() / d + 1) ** 3
        a = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(float(a - 2 * kxy.mean()))
    v = np.array(vals)
    return float(v.mean()), float(v.std())


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    dist = torch.cdist(x, x)  # (n, n)
    return dist.kthvalue(k + 1, dim=1).values  # k-th neighbour, excluding the point itself


def inside_manifold(ref: torch.Tensor, query: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(N_ref, D), (N_q, D) -> (N_q,) bool: which query rows fall inside the k-NN manifold of ref, i.e. within the
    distance from some ref row to its k-th nearest ref neighbour (Kynkäänniemi et al. 2019)."""
    assert ref.ndim == 2 and query.ndim == 2 and ref.shape[1] == query.shape[1], f"{tuple(ref.shape)} vs {tuple(query.shape)}"
    if len(ref) <= k:
        raise ValueError(f"a k-NN manifold needs more than k={k} reference samples")
    ref, query = ref.to(torch.float64), query.to(torch.float64)
    d = torch.cdist(query, ref)  # (N_q, N_ref)
    return (d <= _knn_radii(ref, k)[None]).any(dim=1)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    precision: fraction of fakes inside the real manifold; recall: fraction of reals inside the fake manifold.
    """
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples on each side")
    precision = inside_manifold(real, fake, k).double().mean()
    recall = inside_manifold(fake, real, k).double().mean()
    return float(precision), float(recall)


def all_metrics(real: FeatureSet, fake: FeatureSet, kid_subset: int = 1000, k: int = 3) -> dict[str, float]:
    kid, kid_std = kid_score(real.features, fake.features, subset_size=kid_subset)
    p, r = precision_recall(real.features, fake.features, k=k)
    return {"fd": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std, "precision": p, "recall": r,
            "n_real": len(real), "n_fake": len(fake)}
