"""Does a model draw emoji that read as emoji, per group? Compares checkpoints (unconditional or conditional) on one
labelled dataset, judged by a classifier that no model was conditioned on or selected with.

    python -m bench.conditional --data data/emoji64x3 --judge checkpoints/emoji_judge.safetensors \
        shipped=checkpoints/emoji64.safetensors arm=runs/x/export.safetensors [--n 1500] [--tag NAME]

For each model, at psi 0.7 and the card's noise mode:
- overall: the share of samples the judge recognises (top subgroup probability >= 0.5). A conditional model draws
  its labels from the dataset's rows, so it is asked for the data's mix, as an unconditional model implicitly is.
- per group, the same for every model ("bucket"): the data-mix samples are put in the group the judge names; the
  recognised share within each bucket with its 90 % Wilson interval (thin buckets are noisy: use a larger --n),
  and the bucket's share of all samples.
- per group, conditional models only ("asked"): n_group samples drawn for each Unicode group (labels from that
  group's rows): the recognised share, and how often the judge names the group it was asked for.
- KID (x1000) to the dataset in the judge's feature space.
- label pull (subgroup-conditional models): per group, the median over its subgroups of how far the label moves w
  from the mean of all subgroups, in units of how far z moves it (see label_pull).
- within-class variety (conditional models): for up to 24 subgroups with >= k real images (k = --variety-k, 16;
  30 subgroups with a larger k), the median nearest-neighbour distance among k samples of the subgroup over the
  same among k of its real images (< 1: less varied than the data; a collapse drives it towards 0).
- real images: the judge's recognised share on its own held-out images, overall and per group (the ceiling).
Writes bench/results/conditional[-TAG].json and a sheet of 8 samples per group per model (PNG).
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, save_result
from gan.checkpoint import load_checkpoint
from gan.dataset import ImageDataset, load_dataset
from gan.evaluate import RECOGNISED_AT, generator_images, nearest_neighbour_gaps
from gan.features import load_feature_net, split_indices
from gan.images import grid, to_uint8, upscale
from gan.labels import dataset_c
from gan.metrics import kid_score
from gan.networks import Generator, labels_to_c
from gan.runtime import default_noise_mode

PSI = 0.7


@torch.no_grad()
def judge_batches(net, imgs: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """imgs (N, 3, H, W) in [-1, 1] -> (features (N, D), top subgroup prob (N,), top group prob (N,), top group (N,))."""
    feats, probs, gprobs, groups = [], [], [], []
    for i in range(0, len(imgs), batch):
        x = imgs[i : i + batch]
        f = net.features(x)
        p = net.subgroup_head(f).softmax(dim=1)
        pg = net.group_head(f).softmax(dim=1)
        feats.append(f)
        probs.append(p.max(dim=1).values)
        gprobs.append(pg.max(dim=1).values)
        groups.append(pg.argmax(dim=1))
    return torch.cat(feats), torch.cat(probs), torch.cat(gprobs), torch.cat(groups)


def share(x: torch.Tensor) -> float:
    return round(float((x >= RECOGNISED_AT).double().mean()), 3) if len(x) else 0.0


def wilson(k: int, n: int, z: float = 1.645) -> list[float]:
    """The 90 % Wilson score interval of a share k / n: a bucket of a few dozen samples moves by +-0.1 by chance."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 3), round(float(centre + half), 3)]


def draw(G: Generator, n: int, c_table: torch.Tensor | None, noise_mode: str, seed: int) -> torch.Tensor:
    """n samples (n, 3, H, W) in [-1, 1] at PSI; labels drawn from the rows of c_table for a conditional G (every
    model gets the same z: generator_images draws labels from their own stream)."""
    return torch.cat(list(generator_images(G, n, psi=PSI, seed=seed, batch=250, noise_mode=noise_mode, c_table=c_table)))


def measure(name: str, path: str, ds: ImageDataset, net, n: int, n_group: int, real_feats: torch.Tensor,
            variety_k: int = 16) -> tuple[dict, np.ndarray]:
    ck = load_checkpoint(path)
    G = ck.G_ema.eval()
    noise = default_noise_mode(ck.meta)
    groups = ds.labels["group"]
    ds_group = ds.label_array("group")
    conditional = G.c_dim > 0
    c_all = dataset_c(G.cfg, ds) if conditional else None  # (N, c_dim)
    imgs = draw(G, n, c_all, noise, seed=123)
    feats, prob, gprob, pred_group = judge_batches(net, imgs)
    res: dict = {"path": str(path), "nimg": ck.meta.get("nimg"), "conditional": conditional,
                 "labels": list(G.cfg.labels), "label_lambda": round(G.label_lambda, 3),
                 "recognised": round(float((prob >= RECOGNISED_AT).double().mean()), 4),
                 "group_recognised": share(gprob),
                 "kid_x1000": round(1000 * kid_score(real_feats, feats, subset_size=min(1000, n))[0], 2),
                 "per_group": {}}
    sheet_rows = []
    for g, gname in enumerate(groups):
        rows = np.flatnonzero(ds_group == g)
        mask = pred_group == g  # the data-mix samples the judge puts in this group: the same measure for every model
        hits, size = int((prob[mask] >= RECOGNISED_AT).sum()), int(mask.sum())
        bucket = {"bucket_recognised": share(prob[mask]), "bucket_group_recognised": share(gprob[mask]),
                  "bucket_share": round(float(mask.double().mean()), 3), "bucket_n": size,
                  "bucket_recognised_90": wilson(hits, size)}
        if conditional:
            gi = draw(G, n_group, c_all[torch.from_numpy(rows)], noise, seed=1000 + g)
            _, gp, ggp, gg = judge_batches(net, gi)
            res["per_group"][gname] = {"recognised": share(gp), "group_recognised": round(float(((gg == g) & (ggp >= RECOGNISED_AT)).double().mean()), 3),
                                       "judge_names_group": round(float((gg == g).double().mean()), 3),
                                       "measure": "asked for the group", **bucket}
            sheet_rows.append(to_uint8(gi[:8]))
        else:
            res["per_group"][gname] = {"recognised": bucket["bucket_recognised"],
                                       "measure": "samples the judge puts in the group", **bucket}
            pick = imgs[mask][:8]
            row = to_uint8(pick) if len(pick) else np.zeros((0, *imgs.shape[2:], 3), np.uint8)
            if len(row) < 8:  # pad with white
                row = np.concatenate([row, np.full((8 - len(row), *row.shape[1:]), 255, np.uint8)])
            sheet_rows.append(row)
    if conditional:
        res["label_pull"] = label_pull(G, ds)
        res["within_class_nn_ratio"] = within_class_variety(G, ds, net, c_all, noise, k=variety_k,
                                                            max_classes=24 if variety_k <= 16 else 30)
    sheet = upscale(grid(np.concatenate(sheet_rows), cols=8, pad=2), 2)
    print(f"{name}: recognised {res['recognised']:.3f}, KID x1000 {res['kid_x1000']:.2f}")
    return res, sheet


def within_class_variety(G: Generator, ds: ImageDataset, net, c_all: torch.Tensor, noise: str, k: int = 16,
                         max_classes: int = 24) -> dict:
    sub = ds.label_array("subgroup")
    counts = np.bincount(sub, minlength=len(ds.labels["subgroup"]))
    classes = [s for s in np.argsort(-counts) if counts[s] >= k][:: max(1, int(np.ceil((counts >= k).sum() / max_classes)))]
    rng = np.random.RandomState(0)
    ratios = {}
    for s in classes:
        rows = np.flatnonzero(sub == s)
        real = ds.to_tensor(torch.from_numpy(rng.choice(rows, k, replace=False)))
        fake = draw(G, k, c_all[torch.from_numpy(rows)], noise, seed=5000 + int(s))
        fr = judge_batches(net, real)[0]
        ff = judge_batches(net, fake)[0]
        ratios[ds.labels["subgroup"][s]] = round(float(nearest_neighbour_gaps(ff).median() / nearest_neighbour_gaps(fr).median()), 3)
    vals = np.array(list(ratios.values()))
    return {"median": round(float(np.median(vals)), 3), "below_0.8": int((vals < 0.8).sum()), "classes": len(vals),
            "per_subgroup": ratios}


@torch.no_grad()
def label_pull(G: Generator, ds: ImageDataset, n: int = 64, seed: int = 0) -> dict:
    """How far each subgroup's label moves w, per Unicode group (subgroup-conditional models): the distance of each
    subgroup's centre (mean w over n shared z, averaged over the other kinds' classes) from the mean of all centres,
    over the mean distance of a sample from its centre (what z moves). Near 0: the label barely changes what is
    drawn, and the class gets the generic picture at the centre of W."""
    cfg = G.cfg
    if not cfg.labels or cfg.labels[0] != "subgroup" or "group" not in ds.labels:
        return {}
    z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(seed))  # (n, z_dim)
    centres, spread = [], []
    for s in range(len(cfg.label_names[0])):
        # every combination of the other kinds' classes (e.g. the 3 styles), the same z for each
        rows = [[s, *rest] for rest in itertools.product(*(range(len(names)) for names in cfg.label_names[1:]))]
        w = torch.stack([G.mapping(z, c=labels_to_c(cfg, torch.tensor([row] * n)))[:, 0] for row in rows])  # (combos, n, w_dim)
        centre = w.mean(dim=1, keepdim=True)  # (combos, 1, w_dim)
        spread.append(float((w - centre).norm(dim=2).mean()))
        centres.append(centre[:, 0].mean(dim=0))  # (w_dim,)
    centres_t = torch.stack(centres)  # (n_subgroups, w_dim)
    pull = (centres_t - centres_t.mean(dim=0)).norm(dim=1) / float(np.mean(spread))  # (n_subgroups,)
    subgroups, groups = ds.labels["subgroup"], ds.labels["group"]
    group_of = {subgroups[s]: groups[g] for s, g in zip(ds.label_array("subgroup"), ds.label_array("group"))}
    by_group: dict[str, list[float]] = {}
    for name, p in zip(cfg.label_names[0], pull.tolist()):
        if name in group_of:
            by_group.setdefault(group_of[name], []).append(p)
    return {g: round(float(np.median(v)), 3) for g, v in by_group.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="NAME=PATH of each checkpoint")
    ap.add_argument("--data", default="data/emoji64x3")
    ap.add_argument("--judge", default="checkpoints/emoji_judge.safetensors")
    ap.add_argument("--n", type=int, default=1500, help="samples per model for the overall figures")
    ap.add_argument("--n-group", type=int, default=200, help="samples per group (conditional models)")
    ap.add_argument("--variety-k", type=int, default=16,
                    help="samples per subgroup for the within-class variety (subgroups with at least as many images)")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(2)
    ds = load_dataset(a.data)
    net = load_feature_net(a.judge)
    held = split_indices(len(ds), seed=net.card.get("seed", 0))[1]
    real_feats, real_prob, real_gprob, real_group = judge_batches(net, ds.to_tensor(torch.arange(len(ds))))
    ds_group = ds.label_array("group")
    real = {"recognised_heldout": share(real_prob[held]), "group_recognised_heldout": share(real_gprob[held]),
            "per_group": {}, "per_group_group_recognised": {}}
    for g, gname in enumerate(ds.labels["group"]):
        idx = held[ds_group[held] == g]
        real["per_group"][gname] = share(real_prob[idx])
        # the group measure on real images: named the right group with p >= 0.5
        ok = (real_group[idx] == g) & (real_gprob[idx] >= RECOGNISED_AT)
        real["per_group_group_recognised"][gname] = round(float(ok.double().mean()), 3) if len(idx) else None
    res = {"data": a.data, "judge": a.judge, "judge_card": {k: net.card.get(k) for k in ("seed", "width", "group_acc", "subgroup_acc", "epochs")},
           "psi": PSI, "threshold": RECOGNISED_AT, "real": real, "models": {}}
    sheets = []
    for spec in a.models:
        name, path = spec.split("=", 1)
        res["models"][name], sheet = measure(name, path, ds, net, a.n, a.n_group, real_feats, a.variety_k)
        sheets.append(sheet)
        Image.fromarray(sheet).save(RESULTS / f"conditional{'-' + a.tag if a.tag else ''}-{name}.png")
    save_result(f"conditional{'-' + a.tag if a.tag else ''}", res)
    groups = ds.labels["group"]
    print("per group: subgroup-recognised / group-recognised shares (bucket: data-mix samples in the judge's group; "
          "asked: drawn for the group, group-recognised = the judge names that group with p >= 0.5)")
    print(f"{'group':20s} {'real':>9s}  " + "  ".join(f"{n[:9] + ' bucket':>16s} {'asked':>9s}" for n in res["models"]))
    for gname in groups:
        cells = []
        for n in res["models"]:
            pg = res["models"][n]["per_group"][gname]
            asked = f"{pg['recognised']:.2f}/{pg['group_recognised']:.2f}" if res["models"][n]["conditional"] else "-"
            lo, hi = pg["bucket_recognised_90"]
            cells.append(f"{pg['bucket_recognised']:5.2f} [{lo:.2f}-{hi:.2f}] n={pg['bucket_n']:<4d}/{pg['bucket_group_recognised']:.2f} {asked:>9s}")
        print(f"{gname[:20]:20s} {real['per_group'][gname] or 0:.2f}/{real['per_group_group_recognised'][gname] or 0:.2f}  "
              + "  ".join(cells))


if __name__ == "__main__":
    main()
