"""Crash-safe file writes and content hashes (no model code: anything that writes files can depend on this)."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it over `path` (a crash leaves old or new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_checked(path: str | Path, write: Callable[[Path], object], check: Callable[[Path], object],
                    backup: str | Path | None = None) -> Path:
    """Write a new version of `path` beside it, check it, optionally keep a copy of the original, then replace it.

    `write(sibling)` writes the new file; `check(sibling)` raises if it is wrong. A failed write or check leaves the
    original untouched and removes the sibling (used by model surgery, which must never break a run's only state).
    """
    path = Path(path)
    sibling = path.with_name(f".{path.name}.new")
    try:
        write(sibling)
        check(sibling)
        if backup is not None:
            shutil.copy2(path, backup)
        os.replace(sibling, path)
    finally:
        sibling.unlink(missing_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
