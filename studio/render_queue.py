"""One batched path for every Explore picture: concurrent renders from all sessions share a synthesis call.

Two reasons for one path:
- Throughput: users who render at the same time are served together (one Python round through the queue, the
  style affines batched), not one after the other.
- Exactness: a frame's pixels must not depend on what else was in its batch (the scrub strip of a slider and the
  exact frame rendered on release must agree pixel for pixel). Served generators run in batch-invariant mode
  (gan.networks.INVARIANT_ROWS, set by studio.models.serve): the convolutions run one sample at a time and the
  matrix products on fixed-size row blocks, so a row's pixels are the same alone, in a strip or in a crowd's batch,
  and a lone picture costs what batch 1 costs. tests/test_strips.py checks the agreement on the shipped model.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from gan.images import to_uint8
from studio.models import LoadedModel

MAX_BATCH = 32  # rows per synthesis call when exact renders pile up
STRIP_PIECE = 8  # strip rows per call: a render asked while a strip renders waits for at most this many frames
SMALL_MODEL_MACS = 2 * 10**9  # below this a model renders on one torch thread (cpu_threads)
EXACT, STRIP = 0, 1  # priorities: a picture someone waits for, then many-frame work (scrub strips, interpolations)


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
def synthesize(model: LoadedModel, ws: torch.Tensor, noise_mode: str) -> np.ndarray:
    """ws (N, num_ws, w_dim) -> (N, H, W, 3) uint8 through the model's (batch-invariant) synthesis."""
    img = model.G.synthesis(ws.to(model.G.w_avg.device), noise_mode=noise_mode)  # (N, 3, H, W)
    return to_uint8(img)


def render_ws(model: LoadedModel, ws: torch.Tensor, noise_mode: str, queue: RenderQueue | None = None,
              priority: int = EXACT) -> np.ndarray:
    """ws (N, num_ws, w_dim) -> (N, H, W, 3) uint8 through `queue` when given, else in this thread (the same pixels)."""
    return queue.render(model, ws, noise_mode, priority) if queue else synthesize(model, ws, noise_mode)


def synthesis_macs(model: LoadedModel) -> int:
    """Multiply-adds of one image's modulated convolutions (the bulk of the synthesis)."""
    return sum(layer.weight.numel() * layer.resolution**2 for layer in model.G.style_layers())


def cpu_threads(model: LoadedModel) -> int | None:
    """Torch threads for rendering `model` on the render queue's thread: 1 for a small generator, None (as set) for
    a large one. The batch-invariant synthesis is many small ops; from a thread other than the main one, each
    OpenMP region of two threads costs more than it saves (shipped 64 px model, 2 cores, 2026-12-06: 6.0 ms per
    image on one thread, 10.9 ms on two; 61 frames 224 vs 379 ms), and one thread leaves the other core to the web
    server's Python. A config-f sized model (about 10 GMAC and up) renders faster on two (128 px: 207 vs 355 ms)."""
    return 1 if synthesis_macs(model) < SMALL_MODEL_MACS else None


class RenderQueue:
    """Renders (model, ws, noise mode) requests on one worker thread, merging what is waiting into one batch.

    No artificial wait: while one batch renders, the next requests queue up and go together, so a lone user pays
    nothing extra and a crowd is batched. Exact renders go first (up to MAX_BATCH rows together); strip frames go
    STRIP_PIECE rows at a time, so a render waits for at most one small piece behind a strip. CUDA models render in
    the caller's thread (on ZeroGPU Spaces the GPU exists only inside the caller's @spaces.GPU call).
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
            return synthesize(model, ws, noise_mode)
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
        rows up to STRIP_PIECE rows in all (a strip goes a piece at a time, so exact renders never wait long)."""
        order = sorted(self._pending, key=lambda j: j.priority)  # stable: oldest first within a priority
        first = order[0]
        pieces: list[tuple[_Job, int, int]] = []
        rows = strip_rows = 0
        for job in order:
            if job.model is not first.model or job.noise_mode != first.noise_mode:
                continue
            n = min(job.left(), self.max_batch - rows if job.priority == EXACT else STRIP_PIECE - strip_rows)
            if n <= 0:
                continue
            pieces.append((job, job.done, n))
            job.done += n
            rows += n
            strip_rows += n if job.priority == STRIP else 0
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
                threads, before = cpu_threads(first.model), torch.get_num_threads()
                if threads:  # process-wide in torch: a fine-tune running beside shares the cores for this call
                    torch.set_num_threads(threads)
                try:
                    images = synthesize(first.model, ws, first.noise_mode)
                finally:
                    torch.set_num_threads(before)
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
