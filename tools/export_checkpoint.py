"""Export a run state to a lean shipped checkpoint (G_ema + D in fp16, plus a JSON model card).

    python -m gan evaluate --checkpoint runs/emoji64/state.safetensors --data data/emoji64 --n 3655 --out ev.json
    python -m tools.export_checkpoint runs/emoji64/state.safetensors checkpoints/emoji64.safetensors --noise-mode const --eval ev.json

`--eval` takes the JSON written by `python -m gan evaluate --out` (or one entry of bench/results/metrics.json) and puts
its figures, next to the real-vs-real floor, in the card's "metrics".
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gan.checkpoint import load_checkpoint, save_checkpoint
from gan.emoji_build import NOTO_LICENSE
from gan.features import DEFAULT_FEATURES
from gan.networks import NOISE_MODES

EMOJI64_RECIPE = ("python -m gan dataset emoji --out data/emoji64 && "
                  "python -m gan train --config configs/emoji64.json --out runs/emoji64")


def card_metrics(ev: dict, measured: str) -> dict:
    """The card's "metrics" block from an evaluate() result: rounded figures at psi 1, plus the real-vs-real floor, and
    the share of psi-0.7 samples the emoji classifier recognises when the result has it."""
    m, f = ev["model"], ev["real_vs_real"]
    card = {
        "fd": round(m["fd"], 3), "kid": round(m["kid"], 4), "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
        "psi": 1.0, "noise_mode": ev["noise_mode"], "n_fake": m["n_fake"], "n_real": m["n_real"],
        "features": f"emoji feature network (checkpoints/{DEFAULT_FEATURES.name})" if ev["features"] == "emoji" else ev["features"],
        "measured": measured,
        "real_vs_real_floor": {k: round(f[k], 4) for k in ("fd", "kid", "precision", "recall")},
    }
    if "recognised" in ev:  # share of psi-0.7 samples the emoji classifier recognises, next to real emoji's share
        r = ev["recognised"]
        card["recognised"] = {"model": round(r["model"], 3), "real": round(r["real"], 3), "psi": r["psi"], "threshold": r["threshold"],
                              "real_images": r["real_images"], "n_fake": r["n_fake"]}
    return card


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("out")
    ap.add_argument("--eval", default=None, help="JSON written by `python -m gan evaluate --out`; converted to the card's metrics")
    ap.add_argument("--noise-mode", default=None, choices=NOISE_MODES, help="recommended noise mode for viewers")
    ap.add_argument("--name", default=None, help="the model's name in the app's picker (default: the file name)")
    ap.add_argument("--recipe", default=EMOJI64_RECIPE, help="the commands that retrain this model (default: the emoji64 recipe)")
    ap.add_argument("--dataset", default=None, metavar="DIR",
                    help="the dataset folder the run last trained on: its name, licences and sources go on the card "
                         "(and, for a conditional model, its class counts and subgroup -> group map)")
    a = ap.parse_args()
    ck = load_checkpoint(a.state, need_d=True)
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "version", "model", "storage_dtype")}
    meta["exported_from"] = {"sha256": ck.sha256, "step": ck.meta.get("step")}
    meta["recipe"] = a.recipe
    if a.name:
        meta["name"] = a.name
    if meta.get("train_changes") or meta.get("surgery") or meta.get("warm_starts"):
        meta["recipe_note"] = ("this run was changed on the way (see train_changes, surgery and warm_starts, each at the image count "
                               "where it happened); the config file holds the final settings, so the recipe from scratch "
                               "uses them from the start")
    meta["param_counts"] = {"G": sum(p.numel() for p in ck.G_ema.parameters()), "D": sum(p.numel() for p in ck.D.parameters())}
    if a.dataset:
        from gan.dataset import load_dataset
        from gan.labels import label_info

        ds_meta = json.loads((Path(a.dataset) / "meta.json").read_text())
        meta["dataset"], meta["license"] = ds_meta["name"], ds_meta["license"]
        if ds_meta.get("sources"):  # every source with its licence and attribution (e.g. Twemoji's CC-BY 4.0)
            meta["sources"] = [{k: v for k, v in src.items() if not k.startswith("unmatched")} for src in ds_meta["sources"]]
        if ck.model_cfg.labels:
            meta["label_info"] = label_info(load_dataset(a.dataset), list(ck.model_cfg.labels))
    if meta.get("dataset") == "noto-emoji":
        meta["license"] = NOTO_LICENSE
    meta["contents"] = "G_ema (for exploring) and D (for fine-tuning), stored as float16; loading casts to float32"
    if meta.get("hardware", "").startswith("cpu: x86_64"):  # runs saved before hardware_name() existed
        from gan.runtime import hardware_name

        meta["hardware"] = hardware_name(torch.device("cpu"))
    if a.noise_mode:
        meta["default_noise_mode"] = a.noise_mode
    if a.eval:
        meta["metrics"] = card_metrics(json.loads(Path(a.eval).read_text()), measured=time.strftime("%Y-%m-%d"))
        recommended = meta.get("default_noise_mode", "const")
        if meta["metrics"]["noise_mode"] != recommended:
            sys.exit(f"the metrics were measured with noise mode {meta['metrics']['noise_mode']!r} but the card recommends "
                     f"{recommended!r}; evaluate with the mode viewers will use")
    out = save_checkpoint(a.out, ck.model_cfg, ck.G_ema, None, ck.D, meta=meta, dtype=torch.float16, write_card=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
