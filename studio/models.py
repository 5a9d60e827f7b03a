"""Generators ready to serve, and the catalogue of checkpoints a user can pick from."""
from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from gan.checkpoint import Checkpoint, load_checkpoint
from gan.labels import LabelSpace
from gan.networks import Generator


@dataclass
class LoadedModel:
    """A generator ready to render, with what identifies it."""

    label: str  # shown in the UI banner
    G: Generator  # G_ema in eval mode on the serving device (channels-last on CPU)
    checkpoint: Checkpoint  # CPU fp32 copy with D (for fine-tuning and inversion) and the card
    sha256: str  # identifies the weights: render memo and direction caches are keyed by it

    @property
    def num_ws(self) -> int:
        return self.G.num_ws

    @property
    def resolution(self) -> int:
        return self.checkpoint.model_cfg.resolution

    @property
    def path(self) -> Path | None:
        return self.checkpoint.path

    @functools.cached_property
    def labels(self) -> LabelSpace:
        """The categories and styles this model can draw (none for an unconditional model)."""
        return LabelSpace.of(self.checkpoint.model_cfg, self.checkpoint.meta)


def serve(ck: Checkpoint, label: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Wrap a loaded checkpoint for serving: a copy of G_ema on `device`, frozen and batch-invariant (a picture's
    pixels do not depend on what else shares its batch: gan.networks.INVARIANT_ROWS)."""
    device = torch.device(device)
    G = copy.deepcopy(ck.G_ema).to(device).eval().requires_grad_(False).batch_invariant_()
    if device.type == "cpu":
        G = G.to(memory_format=torch.channels_last)  # ~20% faster batch-1 synthesis on CPU
    return LoadedModel(label, G, ck, ck.sha256)


def load_model(path: str | Path, label: str, device: torch.device | str = "cpu") -> LoadedModel:
    """A checkpoint file as a LoadedModel on `device`. Raises CheckpointError with a clear reason."""
    return serve(load_checkpoint(path), label, device)


# ----------------------------------------------------------------------------------------------------------------
# The model picker's catalogue


@dataclass
class ModelEntry:
    """One generator checkpoint a user can pick, described from its card (the header only: nothing is loaded)."""

    path: Path
    name: str  # the card's name, else the file name
    resolution: int
    nimg: int | None  # images seen in training, if the card says

    def label(self) -> str:
        seen = f", {self.nimg / 1000:,.0f}k images" if self.nimg else ""
        return f"{self.name} ({self.resolution} px{seen})"


def catalogue(folders: list[Path]) -> list[ModelEntry]:
    """Every GAN Studio generator checkpoint in `folders` (other safetensors files, e.g. feature nets, are skipped)."""
    from gan.checkpoint import CheckpointError, read_metadata

    out: list[ModelEntry] = []
    seen: set[Path] = set()
    for folder in folders:
        for path in sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []:
            if path.resolve() in seen:
                continue
            try:
                doc = read_metadata(path)
                res = int(doc["model"]["resolution"])
            except (CheckpointError, KeyError, TypeError, ValueError):
                continue
            seen.add(path.resolve())
            out.append(ModelEntry(path, str(doc.get("name") or path.stem), res, doc.get("nimg")))
    return out


class ModelCache:
    """Models loaded for serving, shared read-only by the sessions that picked them (least recently used dropped)."""

    def __init__(self, device: torch.device | str = "cpu", size: int = 4):
        self.device = torch.device(device)  # where served generators live
        self.size = size  # models kept loaded at once
        self._models: dict[Path, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, path: str | Path, label: str | None = None) -> LoadedModel:
        """The model at `path`, loaded once, labelled `label` or its card's name. Raises CheckpointError."""
        key = Path(path).resolve()
        with self._lock:
            if key in self._models:
                self._models[key] = self._models.pop(key)  # most recently used last
                return self._models[key]
        ck = load_checkpoint(key)  # outside the lock: other users keep going meanwhile
        model = serve(ck, label or str(ck.meta.get("name") or key.stem), self.device)
        with self._lock:
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.pop(next(iter(self._models)))
        return model
