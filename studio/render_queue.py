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
  (On another CPU the threshold may differ: those tests would say so.)
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
MAX_BATCH = 32  # rows per synthesis call when exact renders pile up (16-32 rows: the cheapest per image on 2 cores)
EXACT, STRIP = 0, 1  # priorities: a picture someone waits for, then strip frames (which fill the rest of a batch)


@dataclass
class _Job:
    model: LoadedModel
    ws: torch.Tensor  # (N, num_ws, w_dim) on CPU
    noise_mode: str
    priority: int
    done: int = 0  # rows handed to the worker so far
    parts: list = field(default_factory=list)  # rendered (rows, H, W, 3) pieces, in order
    future: Future = field(default_factory=Future)

    def left(self) -> int:
        return len(self.ws) - self.done


@torch.inference_mode()
def synthesize_padded(model: LoadedModel, ws: torch.Tensor, noise_mode: str) -> np.ndarray:
    """ws (N, num_ws, w_dim) -> (N, H, W, 3) uint8, in one call of at least MIN_BATCH rows (see the module docstring)."""
    device = model.G.w_avg.device
    n = len(ws)
    if n < MIN_BATCH:
        ws = torch.cat([ws, ws[-1:].expand(MIN_BATCH - n, -1, -1)])  # (MIN_BATCH, num_ws, w_dim)
    img = model.G.synthesis(ws.to(device), noise_mode=noise_mode)  # (max(N, MIN_BATCH), 3, H, W)
    return to_uint8(img[:n])


class RenderQueue:
    """Renders (model, ws, noise mode) requests on one worker thread, merging what is waiting into one batch.

    No artificial wait: while one batch renders, the next requests queue up and go together, so a lone user pays
    nothing extra and a crowd is batched. Exact renders go first (up to MAX_BATCH rows together); strip frames are
    cut into pieces that fill the rest of a MIN_BATCH-row batch, so a render waits for at most one small batch
    behind a strip, and its padding rows do useful work. CUDA models render in the caller's thread (on ZeroGPU
    Spaces the GPU exists only inside the caller's @spaces.GPU call), with the same padding.
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

    def render(self, model: LoadedModel, ws: torch.Tensor, noise_mode: str, priority: int = EXACT) -> np.ndarray:
        """ws (N, num_ws, w_dim) -> (N, H, W, 3) uint8; blocks until rendered. priority STRIP: speculative frames."""
        if ws.ndim != 3 or ws.shape[1:] != (model.num_ws, model.G.w_dim):
            raise ValueError(f"expected ws (N, {model.num_ws}, {model.G.w_dim}), got {tuple(ws.shape)}")
        if model.G.w_avg.device.type != "cpu":
            return np.concatenate([synthesize_padded(model, ws[i : i + MIN_BATCH], noise_mode)
                                   for i in range(0, len(ws), MIN_BATCH)])
        job = _Job(model, ws.detach().cpu(), noise_mode, priority)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="render-queue", daemon=True)
                self._thread.start()
            self._pending.append(job)
            self._cond.notify()
        return job.future.result()

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The next batch as (job, first row, rows) pieces: the oldest job of the highest priority, then the waiting
        jobs that can share its batch (same model and noise mode): exact renders up to MAX_BATCH rows, then strip
        rows up to MIN_BATCH rows (a strip goes MIN_BATCH rows at a time, filling what exact renders leave)."""
        order = sorted(self._pending, key=lambda j: j.priority)  # stable: oldest first within a priority
        first = order[0]
        pieces: list[tuple[_Job, int, int]] = []
        rows = 0
        for job in order:
            if job.model is not first.model or job.noise_mode != first.noise_mode:
                continue
            cap = self.max_batch if job.priority == EXACT else MIN_BATCH
            n = min(job.left(), cap - rows)
            if n <= 0:
                continue
            pieces.append((job, job.done, n))
            job.done += n
            rows += n
        self._pending = [j for j in self._pending if j.left() > 0]
        return pieces

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                pieces = self._take()
                self._busy = True
            try:
                first = pieces[0][0]
                ws = torch.cat([j.ws[a : a + n] for j, a, n in pieces])  # (rows, num_ws, w_dim)
                images = synthesize_padded(first.model, ws, first.noise_mode)
                self.batches += 1
                self.rows += len(ws)
                start = 0
                for j, a, n in pieces:
                    j.parts.append(images[start : start + n])
                    start += n
                    if a + n == len(j.ws):
                        j.future.set_result(np.concatenate(j.parts) if len(j.parts) > 1 else j.parts[0])
            except BaseException as e:  # noqa: BLE001 - hand every failure to the callers, keep the worker alive
                with self._cond:
                    for j, _, _ in pieces:
                        if not j.future.done():
                            j.future.set_exception(e)
                    self._pending = [j for j in self._pending if not j.future.done()]
            finally:
                with self._cond:
                    self._busy = False
