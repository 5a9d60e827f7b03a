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


def cache_dir() -> Path:
    """Where computed directions, Hub downloads and imported models are cached ($GAN_CACHE_DIR)."""
    return Path(os.environ.get("GAN_CACHE_DIR") or Path.home() / ".cache" / "gan-studio")


HUB_PREFIX = "hf://"


def checkpoint_file(spec: str | Path) -> Path:
    """A local GAN Studio checkpoint for `spec`: a file path as it is, or `hf://USER/REPO/FILE` fetched from the
    Hugging Face Hub with `huggingface_hub` (cached; honours HF_HUB_OFFLINE). A fetched NVlabs `.pkl` or rosinality
    `.pt` is imported once, safely (gan.importer), into the cache. Raises CheckpointError with the reason."""
    spec = str(spec)
    if not spec.startswith(HUB_PREFIX):
        return Path(spec)
    parts = spec[len(HUB_PREFIX):].split("/")
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(f"{spec}: a Hub checkpoint is named hf://USER/REPO/FILE")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download

        local = Path(hf_hub_download(repo, filename, cache_dir=cache_dir() / "hub"))
    except Exception as e:  # offline, unknown repo, no network: all end here with the reason
        raise CheckpointError(f"{spec} could not be fetched from the Hugging Face Hub ({type(e).__name__}: {e})") from None
    if local.suffix.lower() in (".pkl", ".pt", ".pth"):
        from gan.importer import import_checkpoint
        from gan.io import file_sha256

        out = cache_dir() / "imported" / f"{file_sha256(local)[:16]}.safetensors"
        if not out.exists():
            try:
                import_checkpoint(local, out, name=f"{repo}/{filename}", license="as stated on the Hub")
            except ValueError as e:
                raise CheckpointError(f"{spec}: {e}") from None
        return out
    return local


def resolve_checkpoint(spec: str | Path | None) -> Checkpoint:
    """Load `spec` (a file or hf://USER/REPO/FILE), else $GAN_CHECKPOINT, else the shipped checkpoint; a clear
    CheckpointError if there is none."""
    spec = spec or os.environ.get("GAN_CHECKPOINT") or DEFAULT_CHECKPOINT
    if spec == DEFAULT_CHECKPOINT and not DEFAULT_CHECKPOINT.exists():
        raise CheckpointError(f"no checkpoint given and the default checkpoint {spec} does not exist; train one or name a file")
    return load_checkpoint(checkpoint_file(spec))


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
