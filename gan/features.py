"""Feature spaces for metrics.

- `EmojiFeatureNet`: a small CNN this project trains on the emoji dataset's group and subgroup labels (like
  LeNet-FID for MNIST): the default, offline feature space. Its 256-d penultimate activations are the features.
- `InceptionFeatures`: the standard FID Inception-v3 through torch-fidelity, when the user installs it and gives
  the weights file (pt_inception-2015-12-05-6726825d.pth); nothing is downloaded.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gan.checkpoint import CheckpointError, read_metadata, write_safetensors
from gan.dataset import ImageDataset
from gan.paths import DEFAULT_FEATURES

FEATURES_FORMAT = "gan-studio-features"


class EmojiFeatureNet(nn.Module):
    """img (B, 3, 64, 64) in [-1, 1] -> features (B, 256); heads predict group and subgroup."""

    def __init__(
        self,
        num_groups: int,  # classes of the 'group' head (9 emoji groups)
        num_subgroups: int,  # classes of the 'subgroup' head (~100)
        width: int = 32,  # channels of the first conv; doubled at each of the 4 stages
        feature_dim: int = 256,  # size of the feature vector
    ):
        super().__init__()
        chans = [3, width, width * 2, width * 4, feature_dim]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.group_head = nn.Linear(feature_dim, num_groups)
        self.subgroup_head = nn.Linear(feature_dim, num_subgroups)
        self.num_groups, self.num_subgroups, self.width, self.feature_dim = num_groups, num_subgroups, width, feature_dim

    def features(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != 64:
            img = F.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return self.body(img).mean(dim=[2, 3])  # (B, feature_dim)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(img)
        return self.group_head(f), self.subgroup_head(f)


def split_indices(n: int, holdout: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(seed).permutation(n)
    k = int(round(n * holdout))
    return np.sort(perm[k:]), np.sort(perm[:k])


def train_feature_net(ds: ImageDataset, epochs: int = 12, batch: int = 64, lr: float = 2e-3, seed: int = 0,
                      width: int = 32, balanced: bool = False, log: Callable[[str], None] = print) -> tuple[EmojiFeatureNet, dict]:
    """Train on 90 % of the dataset, report group/subgroup accuracy on the held-out 10 %. The seed sets both the
    initial weights and the split, so a second classifier with another seed is judged on other held-out images.

    balanced: draw each epoch's images with probability ~ 1/sqrt(images in their subgroup) instead of uniformly, so
    the small groups (Food, Activities, Objects) are not drowned by the 59 % of people (skin-tone variants): a fairer
    judge of samples from every group."""
    torch.manual_seed(seed)
    groups, subgroups = ds.label_array("group"), ds.label_array("subgroup")
    net = EmojiFeatureNet(len(ds.labels["group"]), len(ds.labels["subgroup"]), width=width)
    tr, te = split_indices(len(ds), seed=seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(tr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        if balanced:
            counts = np.bincount(subgroups[tr], minlength=len(ds.labels["subgroup"]))
            weight = torch.from_numpy(1.0 / np.sqrt(counts[subgroups[tr]]))
            perm = tr[torch.multinomial(weight, len(tr), replacement=True, generator=gen).numpy()]
        else:
            perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
        for i in range(len(tr) // batch):
            idx = torch.from_numpy(perm[i * batch : (i + 1) * batch])
            x = ds.to_tensor(idx)
            shift = torch.randint(-4, 5, (2,), generator=gen).tolist()
            x = torch.roll(x, shifts=shift, dims=(2, 3))  # light translation augmentation
            lg, ls = net(x)
            loss = F.cross_entropy(lg, torch.from_numpy(groups[idx.numpy()])) + F.cross_entropy(ls, torch.from_numpy(subgroups[idx.numpy()]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate_accuracy(net, ds, te)
        log(f"epoch {ep + 1}/{epochs}: loss {loss.item():.3f}, held-out group acc {acc['group_acc']:.3f}, subgroup acc {acc['subgroup_acc']:.3f}")
    card = {**evaluate_accuracy(net, ds, te), "train_images": len(tr), "heldout_images": len(te), "epochs": epochs,
            "train_seconds": round(time.time() - t0, 1), "dataset": ds.name, "license": ds.license, "seed": seed, "balanced": balanced,
            "group_names": ds.labels["group"], "subgroup_names": ds.labels["subgroup"]}
    return net.eval(), card


@torch.no_grad()
def evaluate_accuracy(net: EmojiFeatureNet, ds: ImageDataset, idx: np.ndarray) -> dict[str, float]:
    net.eval()
    g, s = ds.label_array("group")[idx], ds.label_array("subgroup")[idx]
    pg, ps = [], []
    for i in range(0, len(idx), 256):
        lg, ls = net(ds.to_tensor(torch.from_numpy(idx[i : i + 256])))
        pg.append(lg.argmax(1))
        ps.append(ls.argmax(1))
    return {"group_acc": float((torch.cat(pg).numpy() == g).mean()), "subgroup_acc": float((torch.cat(ps).numpy() == s).mean())}


def save_feature_net(net: EmojiFeatureNet, path: str | Path, card: dict) -> Path:
    doc = {"format": FEATURES_FORMAT, "version": 1, "arch": {"num_groups": net.num_groups, "num_subgroups": net.num_subgroups,
           "width": net.width, "feature_dim": net.feature_dim}, **card}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    path = write_safetensors(path, tensors, doc)
    import json

    from gan.io import atomic_write_text

    atomic_write_text(Path(path).with_suffix(".json"), json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def load_feature_net(path: str | Path = DEFAULT_FEATURES) -> EmojiFeatureNet:
    from safetensors.torch import load_file

    doc = read_metadata(path, expect_format=FEATURES_FORMAT)
    net = EmojiFeatureNet(**doc["arch"])
    try:
        net.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - any failure here means the file does not fit
        raise CheckpointError(f"{path}: feature network weights do not load ({e})") from None
    net.card = doc
    return net.eval().requires_grad_(False)


class InceptionFeatures:
    """Standard FID features (2048-d pool3 of Inception-v3) via torch-fidelity and a local weights file."""

    def __init__(self, weights_path: str | Path | None):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise RuntimeError(
                "Inception features need torch-fidelity: `pip install torch-fidelity` (it needs torchvision, which "
                "does not import beside torch 2.13.0 CPU; torch 2.14.1 + torchvision 0.29.1 work) and a local copy "
                "of the FID weights file pt_inception-2015-12-05-6726825d.pth"
            ) from None
        if not weights_path or not Path(weights_path).exists():
            raise RuntimeError("Inception features need the path of a local pt_inception-2015-12-05-6726825d.pth "
                               f"(got {weights_path!r})")
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights_path))
        self.net.eval()

    @torch.no_grad()
    def features(self, img: torch.Tensor) -> torch.Tensor:
        x = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # torch-fidelity takes uint8 (B, 3, H, W)
        return self.net(x)[0].reshape(len(img), -1)

