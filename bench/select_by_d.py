"""Does picking the best of K draws by the model's own discriminator make more samples read as emoji?

    python -m bench.select_by_d NAME=PATH [NAME=PATH ...] [--k 1 2 4 8] [--n 1000] [--tag NAME]

Discriminator rejection sampling (Azadi et al., ICLR 2019) in its simplest deterministic form: for every sample, draw
K latents (and, for a conditional model, keep the one asked-for label), render all K at psi 0.7 and keep the one the
shipped D scores highest (for a conditional D: unconditional logit + projection term for that label). K = 1 is plain
sampling. The judge is the independently trained classifier of bench.conditional, which no model was trained or
selected with; D is the model's own, so the selection never sees the judge.

For each K: the recognised share (data mix), the per-group bucket shares, KID x1000 to the dataset in the judge's
feature space, and the nearest-neighbour variety of the kept samples over that of the same number of plain samples
(selection can narrow the output: < 1 means less varied). Writes bench/results/select_by_d[-TAG].json and a sheet
per model (one row of 8 samples per K, same first latents).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, save_result
from bench.conditional import PSI, judge_batches, share
from gan.checkpoint import load_checkpoint
from gan.dataset import load_dataset
from gan.evaluate import RECOGNISED_AT, nearest_neighbour_gaps
from gan.features import load_feature_net
from gan.images import grid, to_uint8, upscale
from gan.labels import dataset_c
from gan.metrics import kid_score
from gan.networks import Discriminator, Generator
from gan.runtime import default_noise_mode


@torch.no_grad()
def best_of_each_k(G: Generator, D: Discriminator, n: int, ks: list[int], c_table: torch.Tensor | None,
                   noise_mode: str, seed: int = 123, batch: int = 100) -> dict[int, torch.Tensor]:
    """{k: n samples (n, 3, H, W) in [-1, 1], each the highest-D of its first k candidates} for every k in ks, from
    one rendering of max(ks) candidates per sample. Candidate 0 of every sample is the z that plain sampling (k = 1)
    draws, so the k = 1 entry is the plain model and every k shares it."""
    kmax = max(ks)
    gen = torch.Generator().manual_seed(seed)
    gen_c = torch.Generator().manual_seed(seed + 1)
    z_all = torch.randn(kmax, n, G.z_dim, generator=gen)  # (K, n, z_dim); the first k rows are the same for any K
    c_all = c_table[torch.randint(len(c_table), (n,), generator=gen_c)] if G.c_dim else None  # (n, c_dim)
    out: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = z_all[:, i : i + b].reshape(kmax * b, G.z_dim)  # (K*B, z_dim), candidate-major
        c = c_all[i : i + b].repeat(kmax, 1) if c_all is not None else None  # (K*B, c_dim)
        img = G.synthesis(G.mapping(z, c=c, psi=PSI), noise_mode=noise_mode).clamp(-1, 1)  # (K*B, 3, H, W)
        score = D(img, c).reshape(kmax, b)  # (K, B)
        img = img.reshape(kmax, b, *img.shape[1:])  # (K, B, 3, H, W)
        for k in ks:
            out[k].append(img[score[:k].argmax(dim=0), torch.arange(b)])  # (B, 3, H, W)
    return {k: torch.cat(v) for k, v in out.items()}


def best_of_k(G: Generator, D: Discriminator, n: int, k: int, c_table: torch.Tensor | None, noise_mode: str,
              seed: int = 123, batch: int = 100) -> torch.Tensor:
    """n samples (n, 3, H, W) in [-1, 1]: each the highest-D of k draws (k = 1: plain sampling)."""
    return best_of_each_k(G, D, n, [k], c_table, noise_mode, seed, batch)[k]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="NAME=PATH of each checkpoint (with its discriminator)")
    ap.add_argument("--data", default="data/emoji64x3")
    ap.add_argument("--judge", default="checkpoints/emoji_judge.safetensors")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset(a.data)
    net = load_feature_net(a.judge)
    real_feats = judge_batches(net, ds.to_tensor(torch.arange(len(ds))))[0]
    groups = ds.labels["group"]
    res = {"data": a.data, "judge": a.judge, "psi": PSI, "threshold": RECOGNISED_AT, "n": a.n, "models": {}}
    for spec in a.models:
        name, path = spec.split("=", 1)
        ck = load_checkpoint(path, need_d=True)
        G, D = ck.G_ema.eval(), ck.D.eval()
        noise = default_noise_mode(ck.meta)
        c_table = dataset_c(G.cfg, ds) if G.c_dim else None
        rows, per_k = [], {}
        plain_nn = None
        picked = best_of_each_k(G, D, a.n, a.k, c_table, noise)
        for k in a.k:
            imgs = picked[k]
            feats, prob, gprob, pred_group = judge_batches(net, imgs)
            nn = float(nearest_neighbour_gaps(feats).median())
            plain_nn = nn if plain_nn is None else plain_nn
            per_k[k] = {"recognised": share(prob), "group_recognised": share(gprob),
                        "kid_x1000": round(1000 * kid_score(real_feats, feats, subset_size=min(1000, a.n))[0], 2),
                        "nn_ratio_to_first_k": round(nn / plain_nn, 3),
                        "bucket": {g: {"recognised": share(prob[pred_group == i]),
                                       "share": round(float((pred_group == i).double().mean()), 3)}
                                   for i, g in enumerate(groups)}}
            print(f"{name} K={k}: recognised {per_k[k]['recognised']:.3f}, KID x1000 {per_k[k]['kid_x1000']:.1f}, "
                  f"NN ratio {per_k[k]['nn_ratio_to_first_k']:.3f}", flush=True)
            rows.append(to_uint8(imgs[:8]))
        res["models"][name] = {"path": path, "nimg": ck.meta.get("nimg"), "per_k": per_k}
        sheet = upscale(grid(np.concatenate(rows), cols=8, pad=2), 2)
        Image.fromarray(sheet).save(RESULTS / f"select_by_d{'-' + a.tag if a.tag else ''}-{name}.png")
        save_result(f"select_by_d{'-' + a.tag if a.tag else ''}", res)  # after every model: a long run keeps its part
    print(f"{'group':20s} " + "  ".join(f"{n[:8]} K={k:<3d}" for n in res["models"] for k in a.k))
    for g in groups:
        print(f"{g[:20]:20s} " + "  ".join(f"{res['models'][n]['per_k'][k]['bucket'][g]['recognised']:.2f}/"
                                           f"{res['models'][n]['per_k'][k]['bucket'][g]['share']:.2f}"
                                           for n in res["models"] for k in a.k))


if __name__ == "__main__":
    main()
