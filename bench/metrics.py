"""Quality figures: FD/KID/precision/recall of the shipped generator (and of any snapshots given) against the
emoji dataset in the emoji feature space, with the real-vs-real floor.

    python -m bench.metrics [--snapshot PATH ...] [--n 3655]
"""
from __future__ import annotations

import argparse

from bench.common import save_result
from gan.checkpoint import load_checkpoint
from gan.dataset import load_dataset
from gan.evaluate import evaluate
from gan.latent import default_checkpoint_path, default_noise_mode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/emoji64")
    ap.add_argument("--n", type=int, default=3655, help="generated samples (default: as many as real images)")
    ap.add_argument("--snapshot", action="append", default=[], help="other checkpoints to rank (e.g. early ones)")
    ap.add_argument("--noise-mode", default=None, choices=["const", "random", "none"],
                    help="default: the shipped card's default_noise_mode, for every checkpoint ranked")
    a = ap.parse_args()
    ds = load_dataset(a.data)
    noise_mode = a.noise_mode or default_noise_mode(load_checkpoint(default_checkpoint_path()).meta)
    out = {}
    for path in [str(default_checkpoint_path()), *a.snapshot]:
        ck = load_checkpoint(path)
        r = evaluate(ck.G_ema, ds, n=a.n, noise_mode=noise_mode)
        out[path] = {"nimg": ck.meta.get("nimg"), **r}
        print(path, ck.meta.get("nimg"), {k: round(v, 4) for k, v in r["model"].items()})
    print(save_result("metrics", {"runs": out}).read_text()[:2000])


if __name__ == "__main__":
    main()
