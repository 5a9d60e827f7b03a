"""Fine-tuning speed: how long until the KID to the target set halves, on the shipped model and a bundled set.

    python -m bench.finetune [--set sketch-faces] [--max-steps 300] [--every 10]
    python -m bench.finetune --set faces --seconds 60 --d-kind projected --tag -projected-faces   # a time budget
Runs the same recipe as the app and the CLI (`TrainConfig.finetune_defaults`) through the one training loop
(`gan.training.train`). Training time excludes the KID evaluations (256 samples each), made between steps.
With --seconds the run goes on for that much training time (not stopping when KID halves) and also reports the
samples' variety before and after (median nearest-neighbour gap among 128 samples in the judge's feature space, as a
share of the base model's) and writes the before/after rows at the app's preview seeds (PNG beside the results).
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, save_result
from gan.config import D_KINDS, TrainConfig
from gan.evaluate import TargetKID, generator_features, nearest_neighbour_gaps
from gan.images import to_uint8, upscale
from gan.latent import seeds_to_ws
from gan.resolve import resolve_checkpoint
from gan.runtime import pick_device
from gan.sets import load_set
from gan.training import TrainState, train
from studio.media import PREVIEW_SEEDS


def _variety(extract, G) -> float:
    """Median nearest-neighbour gap among 128 samples of G (psi 1) in the judge's feature space."""
    feats = generator_features(extract, G.eval(), 128, seed=7).features  # (128, D)
    return float(nearest_neighbour_gaps(torch.as_tensor(feats)).median())


@torch.no_grad()
def _rows(G, noise_mode: str) -> np.ndarray:
    """One row of G at the app's preview seeds, psi 0.7: (H, 8 * W, 3) uint8."""
    img = G.eval().synthesis(seeds_to_ws(G, list(PREVIEW_SEEDS), psi=0.7), noise_mode=noise_mode)
    return np.concatenate(list(to_uint8(img)), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="sketch-faces")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=None, help="G and D learning rate (default: the recipe's)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--freeze-d", type=int, default=None, help="FreezeD depth")
    ap.add_argument("--train-mapping", action="store_true", help="also train the mapping network")
    ap.add_argument("--aug-p", type=float, default=None, help="initial augmentation probability")
    ap.add_argument("--g-parts", default=None, choices=["all", "styles"], help="which synthesis weights train")
    ap.add_argument("--ada-target", type=float, default=None)
    ap.add_argument("--ema-nimg", type=int, default=None, help="G_ema half-life in images")
    ap.add_argument("--ema-rampup", type=float, default=None, help="half-life at most this fraction of images seen")
    ap.add_argument("--lr-d", type=float, default=None, help="D learning rate (default: --lr)")
    ap.add_argument("--d-kind", default=None, choices=D_KINDS, help="discriminator (default: the recipe's)")
    ap.add_argument("--d-input-res", type=int, default=None, help="projected D: its input size")
    ap.add_argument("--seconds", type=float, default=None, help="train this long instead of until KID halves")
    ap.add_argument("--tag", default="", help="suffix of the results file (one file per arm)")
    a = ap.parse_args()
    device = pick_device()
    ck = resolve_checkpoint(None)
    ds = load_set(a.set, size=ck.model_cfg.resolution)
    over = {k: v for k, v in (("lr_g", a.lr), ("lr_d", a.lr), ("batch", a.batch), ("freeze_d_blocks", a.freeze_d),
                              ("aug_p", a.aug_p), ("g_parts", a.g_parts), ("ada_target", a.ada_target), ("ema_nimg", a.ema_nimg), ("ema_rampup", a.ema_rampup),
                              ("lr_d", a.lr_d), ("d_kind", a.d_kind), ("d_input_res", a.d_input_res)) if v is not None}
    if a.train_mapping:
        over["freeze_mapping"] = False
    cfg = TrainConfig.finetune_defaults(len(ds), steps=a.max_steps, sample_every=0, checkpoint_every=0, **over)
    state = TrainState(ck.model_cfg, cfg, device=device, init=ck)
    kid_to_target = TargetKID(ds)  # the set embedded once, not at every measurement
    kid0 = kid_to_target(state.G_ema.eval())
    variety0 = _variety(kid_to_target.extract, state.G_ema)
    rows_before = _rows(state.G_ema, state.grid_noise_mode)
    curve = [{"step": 0, "train_s": 0.0, "kid": kid0}]
    train_s, halved = 0.0, None
    stop = threading.Event()
    t = time.perf_counter()
    for ev in train(state, ds, stop=stop):
        if ev.kind != "step":
            continue
        train_s += time.perf_counter() - t
        if ev.step % a.every == 0:
            kid = kid_to_target(state.G_ema.eval())
            curve.append({"step": ev.step, "train_s": round(train_s, 1), "kid": kid})
            print(f"step {ev.step}: {train_s:.1f} s, KID {kid:.4f}", flush=True)
            if halved is None and kid <= kid0 / 2:
                halved = {"step": ev.step, "train_s": round(train_s, 1), "images": ev.nimg}
                if a.seconds is None:
                    stop.set()
        if a.seconds is not None and train_s >= a.seconds:
            stop.set()
        t = time.perf_counter()
    res = {"set": a.set, "images_in_set": len(ds), "batch": cfg.batch, "lr": cfg.lr_g, "freeze_d_blocks": cfg.freeze_d_blocks,
           "freeze_mapping": cfg.freeze_mapping, "aug_p0": cfg.aug_p, "g_parts": cfg.g_parts, "ema_nimg": cfg.ema_nimg, "ema_rampup": cfg.ema_rampup, "lr_d": cfg.lr_d, "kid_before": kid0, "halved": halved,
           "curve": curve, "device": device.type, "d_kind": cfg.d_kind, "d_input_res": cfg.d_input_res}
    if a.seconds is not None:
        res.update(seconds=a.seconds, steps=state.step, kid_after=curve[-1]["kid"],
                   variety_after=_variety(kid_to_target.extract, state.G_ema) / variety0)
        rows = np.concatenate([rows_before, _rows(state.G_ema, state.grid_noise_mode)])  # (2 * H, 8 * W, 3)
        path = RESULTS / f"finetune-{device.type}{a.tag}.png"
        Image.fromarray(upscale(rows, 2)).save(path)
        res["rows"] = path.name
    print(save_result(f"finetune-{device.type}{a.tag}", res).read_text()[:1500])


if __name__ == "__main__":
    main()
