"""One batched path for every Explore picture: concurrent renders from all sessions share a synthesis batch.

Two reasons for one path:
- Throughput: on a 2-core CPU, G costs ~5-8 ms per image at batch 1 and ~2-3 ms per image at batch 16-64, so users
  who render at the same time are served faster together than one after the other.
- Exactness: a frame's pixels must not depend on what else was in its batch (the scrub strip of a slider and the
  exact frame rendered on release must agree pixel for pixel). CPU convolutions (oneDNN) pick their kernel by batch
  size, and a batch of 1 rounds differently from a batch of 61 (measured: 29 of 61 frames differ in some uint8
  pixel). From 16 rows up the kernel is the same: a row's output then does not depend on the batch size, on its
  position or on its neighbours (checked for batches of 16, 17, 24, 32, 48, 61 and 64, on 1 and 2 threads). So every
  batch is padded to at least MIN_BATCH rows, and tests/test_strips.py checks the agreement on the shipped model.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from gan.images import to_uint8
from studio.models import LoadedModel

MIN_BATCH = 16  # rows in every synthesis call (padding repeats the last row): batch-size-independent pixels
MAX_BATCH = 64  # rows per synthesis call when requests pile up (a 61-frame strip is never split)


@dataclass
class _Job:
    model: LoadedModel
    ws: torch.Tensor  # (N, num_ws, w_dim) on CPU
    noise_mode: str
    future: Future = field(default_factory=Future)


@torch.inference_mode()
def synthesize_padded(model: LoadedModel, ws: torch.Tensor, noise_mode: str) -> np.ndarray:
    """ws (N, num_ws, w_dim) -> (N, H, W, 3) uint8, in calls of at least MIN_BATCH rows (see the module docstring)."""
    device = model.G.w_avg.device
    n = len(ws)
    if n < MIN_BATCH:
        ws = torch.cat([ws, ws[-1:].expand(MIN_BATCH - n, -1, -1)])  # (MIN_BATCH, num_ws, w_dim)
    img = model.G.synthesis(ws.to(device), noise_mode=noise_mode)  # (max(N, MIN_BATCH), 3, H, W)
    return to_uint8(img[:n])


class RenderQueue:
    """Renders (model, ws, noise mode) requests on one worker thread, merging what is waiting into one batch.

    No artificial wait: while one batch renders, the next requests queue up and go together, so a lone user pays
    nothing extra and a crowd is batched. CUDA models render in the caller's thread (on ZeroGPU Spaces the GPU
    exists only inside the caller's @spaces.GPU call); they get the same padding.
    """

    def __init__(self, max_batch: int = MAX_BATCH):
        self.max_batch = max_batch
        self._pending: list[_Job] = []
        self._cond = threading.Condition()
        self._busy = False  # a batch is rendering now
        self._thread: threading.Thread | None = None
        self.batches = 0  # synthesis calls made (for tests and benchmarks)
        self.rows = 0  # rows requested in them (without padding)

    def busy(self) -> bool:
        """Whether renders are running or waiting (speculative work such as strip prefetches should wait)."""
        with self._cond:
            return self._busy or bool(self._pending)

    def render(self, model: LoadedModel, ws: torch.Tensor, noise_mode: str) -> np.ndarray:
        """ws (N, num_ws, w_dim) -> (N, H, W, 3) uint8; blocks until rendered."""
        if ws.ndim != 3 or ws.shape[1:] != (model.num_ws, model.G.w_dim):
            raise ValueError(f"expected ws (N, {model.num_ws}, {model.G.w_dim}), got {tuple(ws.shape)}")
        if model.G.w_avg.device.type != "cpu":
            return synthesize_padded(model, ws, noise_mode)
        job = _Job(model, ws.detach().cpu(), noise_mode)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="render-queue", daemon=True)
                self._thread.start()
            self._pending.append(job)
            self._cond.notify()
        return job.future.result()

    def _take(self) -> list[_Job]:
        """The oldest waiting job and the waiting jobs that fit its batch (same model and noise mode)."""
        first = self._pending.pop(0)
        batch, rows, rest = [first], len(first.ws), []
        for job in self._pending:
            if (job.model is first.model and job.noise_mode == first.noise_mode
                    and rows + len(job.ws) <= self.max_batch):
                batch.append(job)
                rows += len(job.ws)
            else:
                rest.append(job)
        self._pending = rest
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch = self._take()
                self._busy = True
            try:
                ws = torch.cat([j.ws for j in batch])  # (sum N, num_ws, w_dim)
                images = synthesize_padded(batch[0].model, ws, batch[0].noise_mode)
                self.batches += 1
                self.rows += len(ws)
                start = 0
                for j in batch:
                    j.future.set_result(images[start : start + len(j.ws)])
                    start += len(j.ws)
            except BaseException as e:  # noqa: BLE001 - hand every failure to the callers, keep the worker alive
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
            finally:
                with self._cond:
                    self._busy = False
