"""Few-shot fine-tuning with and without the diversity term (cross-domain distance consistency, gan/cdc.py).

    python -m bench.diversity [--set sketch-faces] [--n-images 10] [--steps 200] [--weights 0,300]
Fine-tunes the shipped model on the first N images of a bundled set with each weight, then measures in the emoji
feature space: KID to the N targets (before and after), the median nearest-neighbour gap among 64 samples (seeds
0-63, psi 1; a collapse makes it shrink), and the median distance from each sample to its nearest target image
(memorisation makes it shrink). Writes bench/results/diversity.json and a grid per arm to bench/results/.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, save_result
from gan.config import TrainConfig
from gan.dataset import ImageDataset
from gan.defaults import resolve_checkpoint
from gan.evaluate import feature_extractor, kid_to_target, nearest_neighbour_gaps
from gan.images import from_uint8, grid, upscale
from gan.latent import render, seeds_to_ws
from gan.sets import load_set
from gan.training import TrainState, train


def measure(G, ds: ImageDataset, extract) -> dict:
    imgs = render(G, seeds_to_ws(G, list(range(64)), psi=1.0))  # (64, H, W, 3) uint8
    feats = extract(from_uint8(imgs))  # (64, D)
    target = extract(ds.to_tensor(torch.arange(len(ds))))  # (N, D)
    to_target = torch.cdist(feats.double(), target.double()).min(dim=1).values  # (64,)
    return {"kid": kid_to_target(G, ds), "nn_gap_median": round(float(nearest_neighbour_gaps(feats).median()), 3),
            "to_nearest_target_median": round(float(to_target.median()), 3)}, imgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="sketch-faces")
    ap.add_argument("--n-images", type=int, default=10)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--weights", default="0,300", help="diversity weights to compare (0 = off)")
    ap.add_argument("--tag", default="", help="suffix of the results files (e.g. -400 for a longer run)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    ck = resolve_checkpoint(None)
    full = load_set(a.set, size=ck.model_cfg.resolution)
    ds = ImageDataset(full.images[: a.n_images], name=f"{a.set}[:{a.n_images}]", license=full.license)
    extract = feature_extractor("emoji")
    base, base_imgs = measure(ck.G_ema, ds, extract)
    res: dict = {"set": ds.name, "steps": a.steps, "base": base, "arms": {}}
    rows = [base_imgs[:16]]
    for w in (float(x) for x in a.weights.split(",")):
        cfg = TrainConfig.finetune_defaults(len(ds), steps=a.steps, cdc_weight=w, sample_every=0, checkpoint_every=0)
        state = TrainState(ck.model_cfg, cfg, init=ck)
        t = time.perf_counter()
        for _ in train(state, ds):
            pass
        arm, imgs = measure(state.G_ema.eval(), ds, extract)
        arm["train_s"] = round(time.perf_counter() - t, 1)
        arm["nn_gap_vs_base"] = round(arm["nn_gap_median"] / base["nn_gap_median"], 3)
        arm["kid_vs_base"] = round(arm["kid"] / base["kid"], 3)
        res["arms"][f"{w:g}"] = arm
        rows.append(imgs[:16])
        print(f"weight {w:g}: {arm}", flush=True)
    # rows: base, then each arm (16 samples each, seeds 0-15, psi 1), and the target images
    rows.append(ds.images[: min(16, len(ds))])
    sheet = upscale(grid(np.concatenate(rows), cols=16, pad=2), 2)
    Image.fromarray(sheet).save(RESULTS / f"diversity{a.tag}.png")
    print(save_result(f"diversity{a.tag}", res).read_text())


if __name__ == "__main__":
    main()
