"""Where a training step's inputs come from: real rows (with labels and flips) and the fakes' latents and labels.

One `BatchSource` per run owns the shared random stream `gen` (data order, latents, flips, mixing cutoffs, the
fakes' labels). In a data-parallel job every rank draws the whole global batch from that stream and keeps its own
slice, so a run is the same whatever the number of ranks. Draw order is part of the contract: a resumed run replays
exactly, so every draw that an option adds is made only when that option is on.
"""
from __future__ import annotations

import numpy as np
import torch

from gan.config import ModelConfig, TrainConfig
from gan.dataset import ImageDataset
from gan.labels import any_c_table, dataset_c, has_labels

Latents = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # z (b, z_dim), z2 or None, cutoff or None


class BatchSource:
    """Batches for one rank: reals (b, 3, R, R) in [-1, 1] with their labels, and latents and labels for fakes."""

    def __init__(
        self,
        model_cfg: ModelConfig,  # the networks (z_dim, labels)
        num_ws: int,  # G's number of per-layer w: style mixing picks a cutoff layer in [1, num_ws)
        cfg: TrainConfig,  # batch, style mixing, xflip, balance_by / balance_power, seed
        device: torch.device,  # where the images, the randoms and the batches live
        rank: int = 0,  # this process's place in a data-parallel job ...
        world_size: int = 1,  # ... and how many processes share the global batch
    ):
        if cfg.batch % world_size:
            raise ValueError(f"batch {cfg.batch} does not split evenly over {world_size} processes")
        self.model_cfg, self.cfg, self.device = model_cfg, cfg, device
        self.rank, self.world_size = rank, world_size
        self.batch_local = cfg.batch // world_size  # images per step on this rank
        self.num_ws = num_ws
        self.gen = torch.Generator(device).manual_seed(cfg.seed)  # the shared stream (identical on every rank)
        self._images: tuple[ImageDataset, torch.Tensor] | None = None  # (dataset, its images on the device)
        self._labels: tuple | None = None  # (dataset, its c (N, c_dim) or None, the table the fakes' c come from)
        self._row_p: tuple | None = None  # (dataset, (N,) probability of drawing each row), with cfg.balance_by

    def reseed(self, step: int) -> None:
        """Restart the shared stream at `step` (a warm start, or a resume whose saved stream does not fit)."""
        self.gen.manual_seed(self.cfg.seed + step)

    def _slice(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global-batch tensor (B, ...) -> (B / world_size, ...)."""
        b = self.batch_local
        return t[self.rank * b : (self.rank + 1) * b]

    def latents(self) -> Latents:
        """z (b, z_dim), and for style mixing a second z2 and a 0-dim cutoff layer (num_ws: no mixing this batch)."""
        B, zd = self.cfg.batch, self.model_cfg.z_dim
        z = self._slice(torch.randn(B, zd, generator=self.gen, device=self.device))
        if self.cfg.style_mixing <= 0:
            return z, None, None
        z2 = self._slice(torch.randn(B, zd, generator=self.gen, device=self.device))
        cutoff = torch.randint(1, self.num_ws, [], generator=self.gen, device=self.device)
        mix = torch.rand([], generator=self.gen, device=self.device) < self.cfg.style_mixing  # one draw per batch
        return z, z2, torch.where(mix, cutoff, self.num_ws)

    def _device_images(self, dataset: ImageDataset) -> torch.Tensor:
        """The dataset as (N, H, W, 3) uint8 on the device, uploaded once (a CPU 'upload' shares the memory)."""
        if self._images is None or self._images[0] is not dataset:
            self._images = (dataset, torch.from_numpy(np.ascontiguousarray(dataset.images)).to(self.device))
        return self._images[1]

    def _label_tables(self, dataset: ImageDataset) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(the dataset's c (N, c_dim), matched to the model's classes by name, or None for a dataset without the
        model's labels (a user's own images); the table (M, c_dim) the fakes' c are drawn from: the dataset's c, or
        "Any" draws, every class equally often), on the device, built once per dataset."""
        if self._labels is None or self._labels[0] is not dataset:
            real_c = dataset_c(self.model_cfg, dataset).to(self.device) if has_labels(self.model_cfg, dataset) else None
            gen_c = real_c if real_c is not None else any_c_table(self.model_cfg).to(self.device)
            self._labels = (dataset, real_c, gen_c)
        return self._labels[1], self._labels[2]

    def label_batch(self, dataset: ImageDataset, idx: torch.Tensor) -> torch.Tensor | None:
        """c (b, c_dim) of the dataset rows idx (b,); None when the dataset has no labels."""
        if self.model_cfg.c_dim == 0:
            return None
        c = self._label_tables(dataset)[0]
        return None if c is None else c[idx]

    def _draw_rows(self, dataset: ImageDataset) -> torch.Tensor:
        """This rank's share of a global batch of dataset row indices (b,): every row equally often, or with
        cfg.balance_by, every class of that label equally often (cfg.balance_power of the way)."""
        if self.cfg.balance_by is None:  # drawn as before the option existed, so earlier runs keep their sequence
            return self._slice(torch.randint(len(dataset), (self.cfg.batch,), generator=self.gen, device=self.device))
        if self._row_p is None or self._row_p[0] is not dataset:
            p = dataset.class_weights(self.cfg.balance_by, self.cfg.balance_power)  # (N,)
            self._row_p = (dataset, torch.from_numpy(p).float().to(self.device))
        return self._slice(torch.multinomial(self._row_p[1], self.cfg.batch, replacement=True, generator=self.gen))

    def gen_labels(self, dataset: ImageDataset) -> torch.Tensor:
        """c (b, c_dim) for this rank's fakes: the labels of random dataset rows, drawn as the real images are, so G
        is asked for each class as often as D sees it (SG2-ADA's practice). For a dataset without labels
        (fine-tuning on a user's images), every class equally often: the run teaches all of them the style."""
        real_c, table = self._label_tables(dataset)
        if table is real_c:
            return table[self._draw_rows(dataset)]
        idx = self._slice(torch.randint(len(table), (self.cfg.batch,), generator=self.gen, device=self.device))  # (b,)
        return table[idx]

    def real_batch(self, dataset: ImageDataset) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's batch of real images drawn with replacement, (b, 3, R, R) in [-1, 1], and their c (b, c_dim)
        or None; with cfg.xflip, each one is mirrored left-right with probability 0.5 (the dataset, twice over)."""
        images = self._device_images(dataset)  # (N, R, R, 3) uint8
        idx = self._draw_rows(dataset)  # (b,)
        real = images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (b, 3, R, R), as gan.images.from_uint8
        if self.cfg.xflip:  # drawn only when on, so runs without it keep their random sequence
            flip = self._slice(torch.rand(self.cfg.batch, generator=self.gen, device=self.device) < 0.5)
            real = torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)  # (b, 3, R, R)
        return real, self.label_batch(dataset, idx)
