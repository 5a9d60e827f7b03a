"""From what a user names to a loaded checkpoint: a file path, `hf://USER/REPO/FILE` (downloaded from the Hugging
Face Hub and, for an NVlabs `.pkl` or rosinality `.pt`, imported once into the cache), $GAN_CHECKPOINT, or the
shipped model.
"""
from __future__ import annotations

import os
from pathlib import Path

from gan.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from gan.paths import DEFAULT_CHECKPOINT, cache_dir

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
