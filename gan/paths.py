"""Where things live: the repository's folders, the shipped files in them, and the cache folder.

Everything that would otherwise hard-code the repository layout or the cache location reads it from here.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "emoji64.safetensors"  # the shipped generator (G_ema + D + card)
DEFAULT_FEATURES = CHECKPOINT_DIR / "emoji_features.safetensors"  # the metrics' feature network
SETS_DIR = REPO_ROOT / "assets" / "sets"  # bundled fine-tuning sets


def cache_dir() -> Path:
    """Where computed directions, Hub downloads and imported models are cached ($GAN_CACHE_DIR)."""
    return Path(os.environ.get("GAN_CACHE_DIR") or Path.home() / ".cache" / "gan-studio")
