"""Few-shot fine-tuning with and without the variety-keeping options, measured along the run.

    python -m bench.diversity [--set sketch-faces|sketch-mix] [--n-images 10] [--steps 200] [--eval-every 25]
                              [--arm cdc_weight=0 --arm freeze_g_blocks=2 ...] [--seeds 0,1,2,3]
Fine-tunes the shipped model on the first N images of a bundled set once per arm and training seed. Every
`--eval-every` steps it measures, in the emoji feature space: KID to the N targets (256 samples), the median
nearest-neighbour gap among 128 samples (seeds 0-127, psi 1; a collapse makes it shrink) and the median distance from
each sample to its nearest target image (memorisation makes it shrink).

The issue's bar is read off the trajectory: at the first measurement where KID has halved (<= 0.5x the base model's),
is the NN gap still >= 0.8x the base model's? A single end point mixes "adapted further" with "collapsed more", so a
longer run always looks worse on variety; the step where the style has arrived is the fair place to compare.

The emoji feature space itself contracts for line drawings: the same 128 real emoji, sketched, have 0.48x the NN
gap of their colour originals (docs/training-notes.md). So for the sketch-* sets the bench also measures the base
model's own samples passed through the set's sketch transform (`gan.sets.sketch`): the gap a generator that kept every
sample's content and only took on the style would have. `nn_gap_vs_styled_base` compares with that, and
`subject_kept` is the share of seeds whose nearest styled base sample is their own (does seed 7 still draw what it
drew before, in the new style?).
Writes bench/results/diversity{tag}.json and a sheet (base, each arm at its halving step or the end, the targets).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, save_result
from gan.config import FINETUNE_KEEP_VARIETY, TrainConfig
from gan.dataset import ImageDataset
from gan.evaluate import TargetKID, feature_extractor, nearest_neighbour_gaps
from gan.images import from_uint8, grid, upscale
from gan.latent import render, seeds_to_ws
from gan.resolve import resolve_checkpoint
from gan.sets import load_set, sketch
from gan.training import TrainState, train

GAP_SAMPLES = 128  # samples for the NN gap: 64 made single runs differ by as much as the arms did


def subject_kept(feats: torch.Tensor, styled: torch.Tensor) -> float:
    """Share of seeds whose nearest base-sample-in-the-target-style is the same seed's: feats, styled (S, D). A model
    that keeps every sample's content scores high; one that turns them into copies of the targets falls towards 1/S."""
    nearest = torch.cdist(feats.double(), styled.double()).argmin(dim=1)  # (S,)
    return round(float((nearest == torch.arange(len(feats))).double().mean()), 3)


def measure(G, target: torch.Tensor, kid: TargetKID, extract, styled: torch.Tensor | None = None
            ) -> tuple[dict, np.ndarray, torch.Tensor]:
    """(figures, the S samples as uint8 (S, H, W, 3), their features (S, D))."""
    imgs = render(G, seeds_to_ws(G, list(range(GAP_SAMPLES)), psi=1.0))  # (S, H, W, 3) uint8
    feats = extract(from_uint8(imgs))  # (S, D)
    to_target = torch.cdist(feats.double(), target.double()).min(dim=1).values  # (S,)
    m = {"kid": round(kid(G), 4), "nn_gap_median": round(float(nearest_neighbour_gaps(feats).median()), 3),
         "to_nearest_target_median": round(float(to_target.median()), 3)}
    if styled is not None:
        m["subject_kept"] = subject_kept(feats, styled)
    return m, imgs, feats


def parse_arm(text: str) -> dict:
    """'cdc_weight=2000,freeze_g_blocks=2' -> {'cdc_weight': 2000.0, 'freeze_g_blocks': 2}"""
    out: dict = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = float(value) if "." in value or "e" in value else int(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="sketch-faces")
    ap.add_argument("--n-images", type=int, default=10)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=25, help="measure every this many steps")
    ap.add_argument("--arm", action="append", default=None,
                    help="fine-tune overrides of one arm, e.g. cdc_weight=2000,freeze_g_blocks=2 (repeatable; default: "
                         "the recipe, and the recipe with the keep-variety option)")
    ap.add_argument("--seeds", default="0", help="training seeds to repeat each arm with")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop-at-halving", action="store_true", help="end each run where KID has halved")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    a = ap.parse_args()
    # default: the recipe as it is, and with the app's "keep variety" option
    arms = a.arm or ["cdc_weight=0", ",".join(f"{k}={v}" for k, v in FINETUNE_KEEP_VARIETY.items())]
    seeds = [int(s) for s in a.seeds.split(",")]
    torch.set_num_threads(a.threads)
    ck = resolve_checkpoint(None)
    full = load_set(a.set, size=ck.model_cfg.resolution)
    ds = ImageDataset(full.images[: a.n_images], name=f"{a.set}[:{a.n_images}]", license=full.license)
    extract = feature_extractor("emoji")
    kid = TargetKID(ds, extract)
    target = extract(ds.to_tensor(torch.arange(len(ds))))  # (N, D)
    base, base_imgs, base_feats = measure(ck.G_ema, target, kid, extract)
    styled = None
    if a.set.startswith("sketch-"):  # the base samples in the target style: the no-collapse reference
        styled = extract(from_uint8(np.stack([sketch(im) for im in base_imgs])))  # (S, D)
        base["styled_nn_gap_median"] = round(float(nearest_neighbour_gaps(styled).median()), 3)
        base["subject_kept"] = subject_kept(base_feats, styled)
    print(f"base: {base}", flush=True)
    res: dict = {"set": ds.name, "steps": a.steps, "eval_every": a.eval_every, "gap_samples": GAP_SAMPLES,
                 "seeds": seeds, "base": base, "arms": {}}
    rows = [base_imgs[:16]]
    for arm_text in arms:
        over = parse_arm(arm_text)
        runs = []
        for seed in seeds:
            cfg = TrainConfig.finetune_defaults(len(ds), steps=a.steps, seed=seed, sample_every=0, checkpoint_every=0,
                                                **over)
            state = TrainState(ck.model_cfg, cfg, init=ck)
            traj, halved, shown, train_s, t = [], None, None, 0.0, time.perf_counter()
            for ev in train(state, ds):
                due = ev.kind == "step" and ev.step % a.eval_every == 0
                if not (due or ev.kind == "done" and (not traj or traj[-1]["step"] != ev.step)):
                    continue
                train_s += time.perf_counter() - t
                m, imgs, _ = measure(state.G_ema.eval(), target, kid, extract, styled)
                m = {"step": ev.step, "train_s": round(train_s, 1), **m,
                     "kid_vs_base": round(m["kid"] / base["kid"], 3),
                     "nn_gap_vs_base": round(m["nn_gap_median"] / base["nn_gap_median"], 3)}
                if "styled_nn_gap_median" in base:
                    m["nn_gap_vs_styled_base"] = round(m["nn_gap_median"] / base["styled_nn_gap_median"], 3)
                traj.append(m)
                shown = imgs if halved is None else shown  # the sheet shows the halving step (or the last one)
                if halved is None and m["kid_vs_base"] <= 0.5:
                    halved = m
                    if a.stop_at_halving:
                        break  # the bar is read at the halving step
                t = time.perf_counter()
            run = {"seed": seed, "halved_at": halved, "end": traj[-1], "trajectory": traj}
            runs.append(run)
            if seed == seeds[0]:  # the arm at its halving step (if it halved) and at its end
                rows += [shown[:16]] + ([imgs[:16]] if halved is not None and traj[-1] is not halved else [])
            print(f"{arm_text} seed {seed}: halved at {halved and halved['step']} "
                  f"(gap {halved and halved['nn_gap_vs_base']}); end {traj[-1]}", flush=True)
        gaps = [r["halved_at"]["nn_gap_vs_base"] for r in runs if r["halved_at"]]
        styled_gaps = [r["halved_at"].get("nn_gap_vs_styled_base") for r in runs if r["halved_at"]]
        res["arms"][arm_text] = {
            "overrides": over, "runs": runs, "halved_in": f"{len(gaps)}/{len(runs)}",
            "steps_to_halve": [r["halved_at"]["step"] if r["halved_at"] else None for r in runs],
            "gap_at_halving": gaps, "gap_vs_styled_base_at_halving": styled_gaps,
            "gap_at_end": [r["end"]["nn_gap_vs_base"] for r in runs],
            "gap_vs_styled_base_at_end": [r["end"].get("nn_gap_vs_styled_base") for r in runs],
            "kid_at_end": [r["end"]["kid_vs_base"] for r in runs],
            "subject_kept_at_halving": [r["halved_at"].get("subject_kept") for r in runs if r["halved_at"]],
            "subject_kept_at_end": [r["end"].get("subject_kept") for r in runs],
            "meets_bar": bool(gaps) and len(gaps) == len(runs) and min(gaps) >= 0.8,
            "meets_bar_vs_styled_base": bool(styled_gaps) and len(styled_gaps) == len(runs) and None not in styled_gaps
                                        and min(styled_gaps) >= 0.8,
        }
    # rows: base, then each arm at its halving step and end (first seed; 16 samples, seeds 0-15, psi 1), the targets
    rows.append(ds.images[: min(16, len(ds))])
    sheet = upscale(grid(np.concatenate(rows), cols=16, pad=2), 2)
    Image.fromarray(sheet).save(RESULTS / f"diversity{a.tag}.png")
    print(save_result(f"diversity{a.tag}", {**res, "arms": {k: {kk: vv for kk, vv in v.items() if kk != "runs"}
                                                            for k, v in res["arms"].items()}}).read_text()[:3000])
    save_result(f"diversity{a.tag}-trajectories", res)


if __name__ == "__main__":
    main()
