"""How a model runs here: the device to run on, the name of the hardware (recorded beside figures and in cards),
and the noise mode a checkpoint's card asks to render with."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from gan.networks import NOISE_MODES


def default_noise_mode(meta: dict) -> str:
    """The noise mode a checkpoint's card recommends ('const' unless it says otherwise)."""
    mode = meta.get("default_noise_mode", "const")
    return mode if mode in NOISE_MODES else "const"


def pick_device(prefer: str | None = None) -> torch.device:
    """`prefer` (e.g. 'cuda:1', 'cpu') if given, else 'cuda' when available, else 'cpu'."""
    if prefer:
        if prefer.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("CUDA was requested but torch.cuda.is_available() is False")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_name() -> str:
    """The CPU's model name ('AMD EPYC 7B13'), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_name(device: torch.device | str = "cpu") -> str:
    """'cuda: NVIDIA H100 ...' or 'cpu: AMD EPYC ... (2 cores)': what measured a figure or trained a model."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_name()} ({os.cpu_count()} cores)"
