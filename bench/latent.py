"""Latent-space figures on the shipped model: SeFa and GANSpace timings, inversion PSNR/time, direction grids.

    python -m bench.latent [--n-invert 20]
Writes bench/results/latent.json and docs/directions.png (top-5 directions of each method, -3..+3 std).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.common import ROOT, save_result
from gan import directions as dirs
from gan.dataset import load_dataset
from gan.images import from_uint8, grid, to_uint8, upscale
from gan.latent import seeds_to_ws
from gan.projector import run_projection
from gan.resolve import resolve_checkpoint
from gan.runtime import default_noise_mode
from gan.sets import load_set


def direction_figure(G, d_sefa, d_pca, seed: int = 7, k: int = 5, alphas=(-3, -2, -1, 0, 1, 2, 3), noise_mode: str = "const") -> np.ndarray:
    rows = []
    ws = seeds_to_ws(G, [seed], psi=0.7)
    with torch.no_grad():
        for d in (d_sefa, d_pca):
            for i in range(k):
                c = np.zeros(k)
                batch = []
                for a in alphas:
                    c[:] = 0
                    c[i] = a
                    batch.append(dirs.apply(ws, d, c))
                rows.append(to_uint8(G.synthesis(torch.cat(batch), noise_mode=noise_mode)))
    img = upscale(grid(np.concatenate(rows), cols=len(alphas), pad=2), 2)
    canvas = Image.new("RGB", (img.shape[1] + 110, img.shape[0]), "white")
    canvas.paste(Image.fromarray(img), (110, 0))
    draw = ImageDraw.Draw(canvas)
    h = img.shape[0] / (2 * k)
    for j, d in enumerate((d_sefa, d_pca)):
        for i in range(k):
            draw.text((4, (j * k + i) * h + h / 2 - 6), f"{d.method} {i}", fill="black")
    return np.asarray(canvas)


def invert_all(G, D, targets: np.ndarray, steps: int, wplus: int) -> dict:
    psnrs, secs = [], []
    for im in targets:
        t = from_uint8(im[None])  # (1, 3, H, W)
        t0 = time.perf_counter()
        ev = run_projection(G, t, steps=steps, wplus_steps=wplus, D=D, feature_weight=0.05)
        secs.append(time.perf_counter() - t0)
        psnrs.append(ev.psnr)
    return {"n": len(targets), "psnr_mean": round(float(np.mean(psnrs)), 2), "psnr_min": round(float(np.min(psnrs)), 2),
            "psnr_max": round(float(np.max(psnrs)), 2), "seconds_mean": round(float(np.mean(secs)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-invert", type=int, default=20)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--wplus-steps", type=int, default=100)
    ap.add_argument("--data", default="data/emoji64")
    ap.add_argument("--figure-only", action="store_true", help="only redraw docs/directions.png")
    a = ap.parse_args()
    ck = resolve_checkpoint(None)
    G, D = ck.G_ema, ck.D
    res: dict = {"checkpoint": str(ck.path), "nimg": ck.meta.get("nimg")}
    d_sefa = dirs.sefa(G, k=16)
    res["sefa_seconds"] = round(d_sefa.seconds, 4)
    for n in (10_000, 100_000):
        d = dirs.ganspace(G, k=16, n=n)
        res[f"ganspace_{n // 1000}k_seconds"] = round(d.seconds, 3)
    d_pca = d
    res["sefa_top5_eigenvalues"] = [round(float(v), 3) for v in d_sefa.values[:5]]
    res["ganspace_top5_explained"] = [round(float(v), 4) for v in d_pca.explained[:5]]
    fig = direction_figure(G, d_sefa, d_pca, noise_mode=default_noise_mode(ck.meta))
    Image.fromarray(fig).save(ROOT / "docs" / "directions.png")
    if a.figure_only:
        return

    n = a.n_invert
    gen_targets = []
    with torch.no_grad():
        for s in range(1000, 1000 + n):
            gen_targets.append(to_uint8(G.synthesis(seeds_to_ws(G, [s], psi=1.0)))[0])
    res["invert_generated"] = invert_all(G, D, np.stack(gen_targets), a.steps, a.wplus_steps)
    try:
        ds = load_dataset(a.data)
        idx = np.random.RandomState(0).choice(len(ds), n, replace=False)
        res["invert_real_seen"] = invert_all(G, D, ds.images[idx], a.steps, a.wplus_steps)
    except Exception as e:  # noqa: BLE001 - the dataset is optional here
        res["invert_real_seen"] = f"skipped: {e}"
    res["invert_sketch_unseen"] = invert_all(G, D, load_set("sketch-faces").images[:n], a.steps, a.wplus_steps)
    res["invert_steps"] = {"w": a.steps, "w+": a.wplus_steps}
    print(save_result("latent", res).read_text())


if __name__ == "__main__":
    main()
