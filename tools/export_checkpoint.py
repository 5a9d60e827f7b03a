"""Export a run state to a lean shipped checkpoint (G_ema + D in fp16, plus a JSON model card).

    python tools/export_checkpoint.py runs/emoji64/state.safetensors checkpoints/emoji64.safetensors [--notes docs/training-notes.md]
Metrics found in bench/results/metrics-*.json for this state are copied into the card.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gan.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from gan.dataset import NOTO_LICENSE  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("out")
    ap.add_argument("--metrics", default=None, help="JSON file of metrics to put in the card")
    ap.add_argument("--noise-mode", default=None, choices=["const", "random", "none"], help="recommended noise mode for viewers")
    a = ap.parse_args()
    ck = load_checkpoint(a.state, need_d=True)
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "version", "model", "storage_dtype")}
    meta["exported_from"] = {"sha256": ck.sha256, "step": ck.meta.get("step")}
    meta["recipe"] = "python -m gan dataset emoji --out data/emoji64 && python -m gan train --config configs/emoji64.json --out runs/emoji64"
    meta["param_counts"] = {"G": sum(p.numel() for p in ck.G_ema.parameters()), "D": sum(p.numel() for p in ck.D.parameters())}
    if meta.get("dataset") == "noto-emoji":
        meta["license"] = NOTO_LICENSE
    meta["contents"] = "G_ema (for exploring) and D (for fine-tuning), stored as float16; loading casts to float32"
    if meta.get("hardware", "").startswith("cpu: x86_64"):  # runs saved before hardware_name() existed
        from gan.training import hardware_name

        meta["hardware"] = hardware_name(torch.device("cpu"))
    if a.noise_mode:
        meta["default_noise_mode"] = a.noise_mode
    if a.metrics:
        meta["metrics"] = json.loads(Path(a.metrics).read_text())
    out = save_checkpoint(a.out, ck.model_cfg, ck.G_ema, None, ck.D, meta=meta, dtype=torch.float16, write_card=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
