"""Hugging Face Spaces helpers that are no-ops elsewhere."""
from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def gpu(duration: int = 60) -> Callable[[F], F]:
    """`spaces.GPU(duration=...)` on ZeroGPU Spaces (where the `spaces` package exists); identity elsewhere."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
