"""Evaluate a generator against a dataset: FD, KID, precision/recall in a chosen feature space, with the
real-vs-real floor (two disjoint random halves of the data) for scale; and, in the emoji feature space, the share of
samples the emoji classifier recognises (a per-sample "reads as an emoji" measure)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from gan.dataset import ImageDataset
from gan.features import DEFAULT_FEATURES, EmojiFeatureNet, InceptionFeatures, load_feature_net, split_indices
from gan.labels import any_c_table, dataset_c, has_labels
from gan.metrics import FeatureSet, all_metrics
from gan.networks import Generator


def feature_extractor(kind: str = "emoji", inception_weights: str | None = None, path: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "emoji":
        net = load_feature_net(path or DEFAULT_FEATURES)
        return torch.no_grad()(net.features)
    if kind == "inception":
        return InceptionFeatures(inception_weights).features
    raise ValueError(f"features must be 'emoji' or 'inception', got {kind!r}")


@torch.no_grad()
def dataset_features(extract: Callable, ds: ImageDataset, idx: np.ndarray | None = None, batch: int = 256) -> FeatureSet:
    idx = np.arange(len(ds)) if idx is None else idx
    fs = FeatureSet()
    for i in range(0, len(idx), batch):
        fs.add(extract(ds.to_tensor(torch.from_numpy(idx[i : i + batch]))))
    return fs


@torch.no_grad()
def generator_images(G: Generator, n: int, psi: float = 1.0, seed: int = 123, batch: int = 128, noise_mode: str = "const",
                     c_table: torch.Tensor | None = None):
    """Yield n samples of G as img (B, 3, H, W) in [-1, 1] on the CPU, batch by batch, from z drawn with `seed`.

    A conditional G draws each sample's label from the rows of c_table (M, c_dim), e.g. a dataset's labels so the
    samples follow its mix of classes (None: every class equally often). Labels come from their own stream, so a
    conditional and an unconditional model get the same z for the same seed (a paired comparison)."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    gen_c = torch.Generator().manual_seed(seed + 1)
    if G.c_dim and c_table is None:
        c_table = any_c_table(G.cfg)  # (4096, c_dim)
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn(b, G.z_dim, generator=gen).to(device)  # (B, z_dim)
        c = c_table[torch.randint(len(c_table), (b,), generator=gen_c)].to(device) if G.c_dim else None  # (B, c_dim)
        yield G.synthesis(G.mapping(z, c=c, psi=psi), noise_mode=noise_mode).clamp(-1, 1).cpu()  # (B, 3, H, W)


def data_c_table(G: Generator, ds: ImageDataset) -> torch.Tensor | None:
    """The dataset's labels as G's c (N, c_dim) when G is conditional and ds carries its labels, else None."""
    return dataset_c(G.cfg, ds) if has_labels(G.cfg, ds) else None


@torch.no_grad()
def generator_features(extract: Callable, G: Generator, n: int, psi: float = 1.0, seed: int = 123, batch: int = 128,
                       noise_mode: str = "const", c_table: torch.Tensor | None = None) -> FeatureSet:
    fs = FeatureSet()
    for img in generator_images(G, n, psi=psi, seed=seed, batch=batch, noise_mode=noise_mode, c_table=c_table):
        fs.add(extract(img))
    return fs


RECOGNISED_AT = 0.5  # top subgroup probability from which a sample counts as recognised
RECOGNISE_PSI = 0.7  # the truncation of the docs grid the issue judges


@torch.no_grad()
def subgroup_confidence(net: EmojiFeatureNet, img: torch.Tensor) -> torch.Tensor:
    """img (B, 3, H, W) in [-1, 1] -> (B,) the classifier's top probability over its emoji subgroups."""
    assert img.ndim == 4 and img.shape[1] == 3, f"expected (B, 3, H, W), got {tuple(img.shape)}"
    return net(img)[1].softmax(dim=1).max(dim=1).values


@torch.no_grad()
def recognised_share(G: Generator, ds: ImageDataset, n: int = 2000, psi: float = RECOGNISE_PSI, threshold: float = RECOGNISED_AT,
                     noise_mode: str = "const", net: EmojiFeatureNet | None = None, seed: int = 123,
                     c_table: torch.Tensor | None = None) -> dict:
    """Per-sample "reads as an emoji": the share of n samples of G (at psi) that the emoji classifier puts in one
    subgroup (of ~100: face-smiling, animal-bird, country-flag, ...) with probability >= threshold, next to the same
    share for real emoji the classifier did not train on (its held-out 10 %, or all of ds when ds is not the data it
    was trained on). Unlike k-NN precision it does not depend on how densely the data packs each kind of emoji (the
    People & Body group is mostly skin-tone near-duplicates). Samples that pass read as emoji far more often than not
    (docs/training-notes.md, ninth stretch), but it is a proxy, biased towards the kinds the classifier knows best."""
    net = net or load_feature_net(DEFAULT_FEATURES)
    card = getattr(net, "card", {})
    trained_on_ds = card.get("train_images", -1) + card.get("heldout_images", -1) == len(ds)
    real_idx = split_indices(len(ds), seed=card.get("seed", 0))[1] if trained_on_ds else np.arange(len(ds))
    real = torch.cat([subgroup_confidence(net, ds.to_tensor(torch.from_numpy(real_idx[i : i + 256]))) for i in range(0, len(real_idx), 256)])
    c_table = c_table if c_table is not None else data_c_table(G, ds)  # a conditional G draws the data's mix
    fake = torch.cat([subgroup_confidence(net, img) for img in generator_images(G, n, psi=psi, seed=seed, noise_mode=noise_mode,
                                                                                c_table=c_table)])
    return {"model": float((fake >= threshold).double().mean()), "real": float((real >= threshold).double().mean()),
            "real_images": "held-out" if trained_on_ds else "all", "n_fake": n, "n_real": len(real_idx), "psi": psi,
            "threshold": threshold}


def evaluate(G: Generator, ds: ImageDataset, n: int = 5000, features: str = "emoji", inception_weights: str | None = None,
             kid_subset: int = 1000, noise_mode: str = "const", real: FeatureSet | None = None) -> dict:
    """Metrics of G (n samples, psi=1, the given noise mode) vs all of ds, and the floor between two disjoint halves
    of ds. Pass the checkpoint card's default_noise_mode so the figures describe what viewers see.

    real: dataset_features(ds) in the same feature space, when the caller ranks several generators against one
    dataset (computed here otherwise). The floor's halves are rows of it, so the data is embedded once."""
    t0 = time.time()
    extract = feature_extractor(features, inception_weights)
    real = dataset_features(extract, ds) if real is None else real
    real_feats = real.features  # (N, D)
    if len(real_feats) != len(ds):
        raise ValueError(f"real features hold {len(real_feats)} rows but the dataset has {len(ds)} images")
    fake = generator_features(extract, G, n, noise_mode=noise_mode, c_table=data_c_table(G, ds))
    model = all_metrics(real, fake, kid_subset=min(kid_subset, len(ds) // 2))
    recognised = recognised_share(G, ds, n=n, noise_mode=noise_mode) if features == "emoji" else None
    perm = torch.from_numpy(np.random.RandomState(0).permutation(len(ds)))
    half = len(ds) // 2
    a, b = FeatureSet([real_feats[perm[:half]]]), FeatureSet([real_feats[perm[half : 2 * half]]])  # (N/2, D) each
    floor = all_metrics(a, b, kid_subset=min(kid_subset, half))
    return {"features": features, "noise_mode": noise_mode, "model": model, "real_vs_real": floor,
            **({"recognised": recognised} if recognised else {}), "seconds": round(time.time() - t0, 1),
            "note": "FD is biased by sample count; the floor compares two halves of the data (n/2 vs n/2)."}


def nearest_neighbour_gaps(feats: torch.Tensor) -> torch.Tensor:
    """(N, D) features -> (N,) Euclidean distance from each row to its nearest other row. A generator that repeats
    itself (mode collapse) shows gaps near zero where a real sample of the same size does not."""
    assert feats.ndim == 2 and len(feats) >= 2, f"expected (N >= 2, D) features, got {tuple(feats.shape)}"
    d = torch.cdist(feats.double(), feats.double(), compute_mode="donot_use_mm_for_euclid_dist")  # (N, N), exact
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values


_EMOJI_EXTRACTOR: list = []


def default_extractor() -> Callable | None:
    """The shipped emoji feature network's extractor, loaded once; None if it is not shipped."""
    if not _EMOJI_EXTRACTOR:
        try:
            _EMOJI_EXTRACTOR.append(feature_extractor("emoji"))
        except Exception:  # noqa: BLE001 - a missing/corrupt feature net only disables the metric
            _EMOJI_EXTRACTOR.append(None)
    return _EMOJI_EXTRACTOR[0]


class TargetKID:
    """KID of generators to one (small) target set, in the emoji feature space. The targets are embedded once, so
    a run that measures its distance to them every few steps pays only for the samples."""

    def __init__(self, ds: ImageDataset, extract: Callable | None = None):
        self.extract = extract or default_extractor()  # None: no feature network shipped, so no measure
        self.real = dataset_features(self.extract, ds).features if self.extract is not None and len(ds) >= 2 else None

    def __call__(self, G: Generator, n: int = 256) -> float | None:
        """KID between n samples of G and the targets; None without features."""
        if self.real is None:
            return None
        from gan.metrics import kid_score

        fake = generator_features(self.extract, G, n).features
        return kid_score(self.real, fake, num_subsets=50, subset_size=min(len(self.real), 100))[0]


def kid_to_target(G: Generator, ds: ImageDataset, n: int = 256, extract: Callable | None = None) -> float | None:
    """KID between n samples of G and a (small) target set, in the emoji feature space; None without features."""
    return TargetKID(ds, extract)(G, n)