"""Figures of the shipped model for docs/: 8x8 grids at psi 0.7 and 1.0, a seed interpolation strip, loss curves.

    python -m tools.make_docs_figures [--log docs/run_log.jsonl --log runs/emoji64/log.jsonl --keep-log docs/run_log.jsonl]

The run folder (and its log.jsonl) is not committed and can be lost with a machine; `--keep-log` writes the merged
log, averaged over buckets of 3,200 images, into the repo, so the next stretch can extend the curve from it.
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

from gan.images import grid, upscale
from gan.io import atomic_write_text
from gan.labels import LabelSpace
from gan.latent import interpolate_seeds, render, seeds_to_ws
from gan.resolve import resolve_checkpoint
from gan.runtime import default_noise_mode


def run_events(meta: dict) -> list[tuple[int, str]]:
    """(images seen, label) for each change the card records: model surgery, changed training settings, warm starts."""
    events = [(ev["at_nimg"], f"{ev['op']} {ev.get('noise_max_res', '')}".strip()) for ev in meta.get("surgery", [])]
    events += [(ev["at_nimg"], ", ".join(f"{k} {new}" for k, (_, new) in ev["changed"].items()))
               for ev in meta.get("train_changes", [])]
    events += [(ev["at_nimg"], "warm start") for ev in meta.get("warm_starts", [])]
    return sorted(ev for ev in events if ev[0] is not None)  # a change made to a file without nimg has no place on the axis


BUCKET_NIMG = 3200  # images per row of a kept log (10 logged steps of batch 32)


def merge_logs(paths: list[Path]) -> list[dict]:
    """Rows of several logs of one run, in order: each later log replaces the rows from its first image count on."""
    rows: list[dict] = []
    for path in paths:
        new = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if new:
            rows = [r for r in rows if r["nimg"] < new[0]["nimg"]] + new
    return rows


def bucket_rows(rows: list[dict]) -> list[dict]:
    """Average log rows over buckets of BUCKET_NIMG images (last step, images seen and p of each bucket)."""
    buckets: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        buckets[r["nimg"] // BUCKET_NIMG].append(r)
    out = []
    for _, group in sorted(buckets.items()):
        keys = [k for k in group[-1] if k not in ("step", "nimg", "aug_p", "wall_s")]
        mean = {k: round(float(np.mean([g[k] for g in group if k in g])), 5) for k in keys}
        last = group[-1]
        out.append({"step": last["step"], "nimg": last["nimg"], "aug_p": last["aug_p"], "wall_s": last.get("wall_s"), **mean})
    return out


def loss_curves(rows: list[dict], out: Path, events: list[tuple[int, str]] | None = None) -> None:
    """Losses, D outputs and ADA p against images seen; `events` (from run_events) are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = bucket_rows(rows)  # the same figure from a raw log or a kept one
    kimg = np.array([r["nimg"] for r in rows]) / 1000
    start = rows[0]["nimg"] - BUCKET_NIMG  # mark only the changes the logged range shows
    events = [ev for ev in events or [] if ev[0] >= start]

    k = min(25, len(rows))

    def smooth(key: str) -> np.ndarray:
        """Trailing moving average over k logged steps (aligned with kimg[k-1:])."""
        v = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        return np.convolve(np.nan_to_num(v), np.ones(k) / k, mode="valid")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), dpi=100)
    ks = kimg[k - 1 :]
    axes[0].plot(ks, smooth("loss_G"), label="G loss")
    axes[0].plot(ks, smooth("loss_D"), label="D loss")
    axes[1].plot(ks, smooth("D_real"), label="D(real)")
    axes[1].plot(ks, smooth("D_fake"), label="D(fake)")
    axes[2].plot(kimg, [r["aug_p"] for r in rows], label="augment p (ADA)")
    axes[2].plot(ks, smooth("sign_real"), label="E[sign D(real)]", alpha=0.6)
    axes[2].axhline(0.6, color="gray", ls=":", lw=1)
    for ax in axes:
        for (at_nimg, label), colour in zip(events, ["red", "purple", "brown", "olive", "teal", "gray"] * 4):
            ax.axvline(at_nimg / 1000, color=colour, ls="--", lw=1, label=label)
        ax.set_xlabel("thousand images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"emoji64 training (moving average over {k * BUCKET_NIMG // 1000}k images)")
    fig.tight_layout()
    fig.savefig(out)


def label_rows(G, space: LabelSpace, noise: str, docs: Path, per_row: int = 8) -> None:
    """docs/rows_by_group.png (one row of seeds 0-7 at psi 0.7 per group, each seed its own subgroup of the group, any
    style) and docs/rows_by_style.png (the same seeds and subgroups drawn in each style), with a text legend."""
    seeds = list(range(per_row))
    rows, legend = [], []
    for g in space.groups():
        c = space.c_for_seeds(seeds, g)  # (8, c_dim)
        rows.append(render(G, seeds_to_ws(G, seeds, psi=0.7, c=c), noise_mode=noise))
        legend.append(f"{g}: " + " | ".join(space.describe(s, g) for s in seeds))
    Image.fromarray(upscale(grid(np.concatenate(rows), cols=per_row, pad=2), 2)).save(docs / "rows_by_group.png")
    atomic_write_text(docs / "rows_by_group.txt", "\n".join(legend) + "\n")
    if space.styles():
        cats = [space.describe(s, g).split(", ")[0] for s, g in zip(seeds, space.groups() * per_row)]
        rows = []
        for style in space.styles():
            c = torch.cat([space.c_for_seeds([s], cat, style) for s, cat in zip(seeds, cats)])  # (8, c_dim)
            rows.append(render(G, seeds_to_ws(G, seeds, psi=0.7, c=c), noise_mode=noise))
        Image.fromarray(upscale(grid(np.concatenate(rows), cols=per_row, pad=2), 2)).save(docs / "rows_by_style.png")
        atomic_write_text(docs / "rows_by_style.txt", "rows: " + ", ".join(space.styles()) + "\ncolumns: " + ", ".join(cats) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", action="append", type=Path, default=[],
                    help="run log(s), oldest first (e.g. the kept docs/run_log.jsonl, then the new run's log.jsonl)")
    ap.add_argument("--keep-log", type=Path, default=None, help="write the merged log, bucketed, here (e.g. docs/run_log.jsonl)")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of the figures (default: docs/)")
    a = ap.parse_args()
    docs = a.out
    docs.mkdir(parents=True, exist_ok=True)
    ck = resolve_checkpoint(a.checkpoint)
    G, noise = ck.G_ema, default_noise_mode(ck.meta)
    for psi in (0.7, 1.0):
        imgs = render(G, seeds_to_ws(G, list(range(64)), psi=psi), noise_mode=noise)
        Image.fromarray(upscale(grid(imgs, cols=8, pad=2), 2)).save(docs / f"samples_psi{psi:.1f}.png")
    space = LabelSpace.of(ck.model_cfg, ck.meta)
    if space.conditional:
        label_rows(G, space, noise, docs)
    frames = interpolate_seeds(G, [1, 2, 3, 4], frames_per_segment=6, method="slerp", space="w", psi=0.7, noise_mode=noise)
    Image.fromarray(upscale(grid(frames, cols=len(frames), pad=2), 2)).save(docs / "interpolation_strip.png")
    if a.log:
        rows = merge_logs(a.log)
        loss_curves(rows, docs / "loss_curves.png", run_events(ck.meta))
        if a.keep_log:
            atomic_write_text(a.keep_log, "".join(json.dumps(r) + "\n" for r in bucket_rows(rows)))
    print(f"wrote the figures to {docs}/")


if __name__ == "__main__":
    main()
