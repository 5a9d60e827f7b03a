"""Quality figures: FD/KID/precision/recall of the shipped generator (and of any snapshots given) against the
emoji dataset in the emoji feature space, with the real-vs-real floor.

    python -m bench.metrics [--snapshot PATH ...] [--n 3655]
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from bench.common import RESULTS, save_result
from gan.checkpoint import load_checkpoint
from gan.dataset import load_dataset
from gan.evaluate import dataset_features, evaluate, feature_extractor
from gan.networks import NOISE_MODES
from gan.resolve import resolve_checkpoint
from gan.runtime import default_noise_mode

if TYPE_CHECKING:
    import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/emoji64")
    ap.add_argument("--n", type=int, default=3655, help="generated samples (default: as many as real images)")
    ap.add_argument("--snapshot", action="append", default=[], help="other checkpoints to rank (e.g. early ones)")
    ap.add_argument("--noise-mode", default=None, choices=NOISE_MODES,
                    help="default: the shipped card's default_noise_mode, for every checkpoint ranked")
    a = ap.parse_args()
    ds = load_dataset(a.data)
    shipped = resolve_checkpoint(None)
    noise_mode = a.noise_mode or default_noise_mode(shipped.meta)
    real = dataset_features(feature_extractor("emoji"), ds)  # embedded once, shared by every checkpoint ranked
    out = {}
    for path in [str(shipped.path), *a.snapshot]:
        ck = shipped if path == str(shipped.path) else load_checkpoint(path)
        r = evaluate(ck.G_ema, ds, n=a.n, noise_mode=noise_mode, real=real)
        out[path] = {"nimg": ck.meta.get("nimg"), **r}
        print(path, ck.meta.get("nimg"), {k: round(v, 4) for k, v in r["model"].items()}, "recognised", r.get("recognised", {}).get("model"))
    diversity = diversity_64(shipped.G_ema, ds, noise_mode, real.features)
    print(diversity)
    earlier = sorted({**carried_runs(out), **{p: v for p, v in out.items() if p != str(shipped.path)}}.items(),
                     key=lambda kv: kv[1].get("nimg") or 0)
    runs = {str(shipped.path): out[str(shipped.path)], **dict(earlier)}  # the shipped model first, then by images seen
    print(save_result("metrics", {"runs": runs, "diversity_64": diversity}).read_text()[:2000])


def carried_runs(measured: dict) -> dict:
    """Rows of the previous results whose files were not measured this time (snapshots no longer on disk), kept with
    the date they were measured, so the table keeps the run's history. The shipped path is always re-measured."""
    path = RESULTS / "metrics.json"
    if not path.exists():
        return {}
    prev = json.loads(path.read_text())
    date = prev.get("machine", {}).get("date")
    return {p: {**v, "measured": v.get("measured", date)} for p, v in prev.get("runs", {}).items() if p not in measured}


def diversity_64(G, ds, noise_mode: str, real: "torch.Tensor") -> dict:
    """Checks on the docs grids (the 64 samples of seeds 0-63 at psi 0.7 and 1.0), in emoji features:
    - mode collapse: nearest-neighbour gaps among the 64, against 64 random real images (median over 20 draws);
    - "reads as emoji": how many of the 64 fall inside the real data's k-NN manifold (precision, per sample), and
      how many the emoji classifier recognises (top subgroup probability >= 0.5).
    real: the dataset's emoji features, (N, D)."""
    import numpy as np
    import torch

    from gan.evaluate import RECOGNISED_AT, feature_extractor, nearest_neighbour_gaps, subgroup_confidence
    from gan.features import load_feature_net
    from gan.images import from_uint8
    from gan.latent import render, seeds_to_ws
    from gan.metrics import inside_manifold

    extract = feature_extractor("emoji")
    net = load_feature_net()

    def summary(gaps: torch.Tensor) -> dict:
        return {"min": round(float(gaps.min()), 3), "median": round(float(gaps.median()), 3)}

    res = {}
    for psi in (0.7, 1.0):
        imgs = from_uint8(render(G, seeds_to_ws(G, list(range(64)), psi=psi), noise_mode=noise_mode))  # (64, 3, H, W)
        feats = extract(imgs)  # (64, D)
        res[f"samples_psi{psi}"] = {**summary(nearest_neighbour_gaps(feats)),
                                    "inside_real_manifold": int(inside_manifold(real, feats).sum()),
                                    "recognised": int((subgroup_confidence(net, imgs) >= RECOGNISED_AT).sum())}
    rng = np.random.RandomState(0)
    draws = [summary(nearest_neighbour_gaps(extract(ds.to_tensor(torch.from_numpy(rng.choice(len(ds), 64, replace=False))))))
             for _ in range(20)]
    res["real_64"] = {k: round(float(np.median([d[k] for d in draws])), 3) for k in ("min", "median")}
    return res


if __name__ == "__main__":
    main()
