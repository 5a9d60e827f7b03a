"""Per-session state, owned in one place: the session's model, its inverted image, its last fine-tune result and
its job (a fine-tune or an inversion), behind one lock and one idle TTL.

Training and inversion jobs share a small number of slots for the whole server. A session may hold at most one
job, waiting or running; a waiting job learns its position in the line, and the line has a maximum length, so one
client cannot fill the server with work.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from studio.models import LoadedModel

if TYPE_CHECKING:
    from studio.explore import Projection


class JobRefused(RuntimeError):
    """A job could not be queued: the session already has one, or the line is full."""


@dataclass
class _Session:
    model: LoadedModel | None = None  # None: the server's base model
    projection: "Projection | None" = None  # the last image this session inverted
    tuned: LoadedModel | None = None  # the last fine-tune result, kept in memory for "Explore this model"
    job: "Job | None" = None  # the waiting or running training/inversion job
    workdir: Path | None = None  # this session's files (animations, fine-tune runs); removed with the session
    seen: float = field(default_factory=time.monotonic)


class Job:
    """A session's claim on one of the server's job slots. Iterate `wait()` until it runs; always `close()`."""

    def __init__(self, owner: "Sessions", session: str, kind: str):
        self.owner, self.session, self.kind = owner, session, kind
        self.stop = threading.Event()  # set by the user's Stop button, by closing the tab, or at shutdown
        self.running = False
        self.leftover: Path | None = None  # a forgotten session's folder, removed when this job ends

    def wait(self, poll_s: float = 0.5) -> Iterator[int]:
        """Yield this job's 1-based position in the line while it waits; return once it runs (or is stopped)."""
        while not self.owner._try_run(self):
            if self.stop.is_set():
                return
            yield self.owner._position(self)
            with self.owner._lock:
                self.owner._freed.wait(poll_s)

    def close(self) -> None:
        self.owner._close(self)


class Sessions:
    """The base model plus everything held per session (thread-safe, with one idle TTL)."""

    def __init__(self, base: LoadedModel, ttl_s: float = 3600, job_slots: int = 1, max_waiting: int = 16):
        self.base = base  # shared by every session, read-only
        self.ttl_s = ttl_s  # sessions idle for longer are forgotten (their jobs stopped)
        self.job_slots = job_slots  # training/inversion jobs that run at once
        self.max_waiting = max_waiting  # jobs that may wait for a slot
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)  # notified when a slot frees up
        self._sessions: dict[str, _Session] = {}
        self._line: list[Job] = []  # waiting jobs, first come first served

    def _get(self, sid: str) -> _Session:
        s = self._sessions.setdefault(sid, _Session())
        s.seen = time.monotonic()
        return s

    # ---- models ---------------------------------------------------------------------------------------------

    def model(self, sid: str | None) -> LoadedModel:
        with self._lock:
            s = self._sessions.get(sid or "")
            if s is not None:
                s.seen = time.monotonic()
                if s.model is not None:
                    return s.model
        return self.base

    def use_model(self, sid: str, model: LoadedModel | None) -> LoadedModel:
        """Switch this session to `model` (None: back to the base model); one user's switch never affects another's."""
        with self._lock:
            self._get(sid).model = model
        return model or self.base

    # ---- inverted image and fine-tune result ----------------------------------------------------------------

    def projection(self, sid: str | None) -> "Projection | None":
        with self._lock:
            s = self._sessions.get(sid or "")
            return s.projection if s else None

    def set_projection(self, sid: str, projection: "Projection") -> None:
        with self._lock:
            self._get(sid).projection = projection

    def tuned(self, sid: str | None) -> LoadedModel | None:
        with self._lock:
            s = self._sessions.get(sid or "")
            return s.tuned if s else None

    def set_tuned(self, sid: str, model: LoadedModel) -> None:
        with self._lock:
            self._get(sid).tuned = model

    # ---- files ----------------------------------------------------------------------------------------------

    def workdir(self, sid: str, prefix: str) -> Path:
        """A fresh folder for one request's files, inside this session's folder (removed when the session is
        forgotten: Gradio has copied anything it serves into its own cache by then)."""
        with self._lock:
            s = self._get(sid)
            if s.workdir is None or not s.workdir.exists():
                s.workdir = Path(tempfile.mkdtemp(prefix="gan-studio-session-"))
            root = s.workdir
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))

    # ---- jobs -----------------------------------------------------------------------------------------------

    def start_job(self, sid: str, kind: str) -> Job:
        """Queue a job for this session. Raises JobRefused if it already has one or the line is full."""
        with self._lock:
            s = self._get(sid)
            if s.job is not None:
                raise JobRefused(f"you already have a {s.job.kind} job {'running' if s.job.running else 'waiting'}; "
                                 "stop it or wait for it to finish")
            if len(self._line) >= self.max_waiting:
                raise JobRefused(f"the server is busy ({len(self._line)} jobs waiting); try again in a few minutes")
            job = s.job = Job(self, sid, kind)
            self._line.append(job)
            return job

    def stop_job(self, sid: str | None, kind: str | None = None) -> bool:
        """Ask this session's job (of `kind`, if given) to stop. Returns whether there was one."""
        with self._lock:
            s = self._sessions.get(sid or "")
            job = s.job if s else None
        if job is None or (kind is not None and job.kind != kind):
            return False
        job.stop.set()
        return True

    def _running_count(self) -> int:
        return sum(1 for s in self._sessions.values() if s.job is not None and s.job.running)

    def _try_run(self, job: Job) -> bool:
        with self._lock:
            if job.running:
                return True
            if job.stop.is_set() or self._line[0] is not job or self._running_count() >= self.job_slots:
                return False
            self._line.pop(0)
            job.running = True
            return True

    def _position(self, job: Job) -> int:
        with self._lock:
            return self._line.index(job) + 1 if job in self._line else 0

    def _close(self, job: Job) -> None:
        with self._lock:
            if job in self._line:
                self._line.remove(job)
            s = self._sessions.get(job.session)
            if s is not None and s.job is job:
                s.job = None
            job.running = False
            self._freed.notify_all()
        if job.leftover is not None:
            shutil.rmtree(job.leftover, ignore_errors=True)

    # ---- lifetime -------------------------------------------------------------------------------------------

    def forget(self, sid: str) -> None:
        """Drop everything held for a session (its tab closed) and stop its job."""
        with self._lock:
            s = self._sessions.pop(sid, None)
        if s is None:
            return
        if s.job is not None:  # its own `finally` frees its slot and then removes the folder it writes in
            s.job.leftover = s.workdir
            s.job.stop.set()
        elif s.workdir is not None:
            shutil.rmtree(s.workdir, ignore_errors=True)

    def prune(self) -> int:
        """Forget sessions idle for longer than the TTL (never one whose job still runs). Returns how many."""
        now = time.monotonic()
        with self._lock:
            old = [sid for sid, s in self._sessions.items() if now - s.seen > self.ttl_s and s.job is None]
        for sid in old:
            self.forget(sid)
        return len(old)
