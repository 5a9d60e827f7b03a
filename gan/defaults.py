"""The shipped defaults in one place: repository paths, the default checkpoint, device choice, model-card defaults.

Everything that would otherwise hard-code the repository layout or an environment variable reads it from here.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from gan.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from gan.networks import NOISE_MODES

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "emoji64.safetensors"  # the shipped generator (G_ema + D + card)
DEFAULT_FEATURES = CHECKPOINT_DIR / "emoji_features.safetensors"  # the metrics' feature network
SETS_DIR = REPO_ROOT / "assets" / "sets"  # bundled fine-tuning sets


def default_checkpoint_path() -> Path:
    """$GAN_CHECKPOINT if set, else the shipped checkpoints/emoji64.safetensors."""
    return Path(os.environ.get("GAN_CHECKPOINT") or DEFAULT_CHECKPOINT)


def resolve_checkpoint(path: str | Path | None) -> Checkpoint:
    """Load `path`, or the default checkpoint with a clear error if none is shipped yet."""
    if path is None:
        path = default_checkpoint_path()
        if not Path(path).exists():
            raise CheckpointError(
                f"no checkpoint given and the default checkpoint {path} does not exist; train one or name a file"
            )
    return load_checkpoint(path)


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
