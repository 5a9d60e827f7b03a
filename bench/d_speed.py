"""Training images/s for each kind of discriminator, with the shipped model's config (64 px, batch 32).

    python -m bench.d_speed [--threads 1,2] [--steps 6]
A full step (D phase, G phase, EMA) of the real engine from the shipped weights, for the residual StyleGAN2 D and the
projected D at its native 64 px input and upsampled to 128. Writes bench/results/d-speed.json.
"""
from __future__ import annotations

import argparse

import torch

from bench.common import p50, save_result, timeit
from gan.config import TrainConfig
from gan.dataset import ImageDataset, load_dataset
from gan.resolve import resolve_checkpoint
from gan.training import TrainState

ARMS = {"stylegan2": {}, "projected-64": {"d_kind": "projected"},
        "projected-128": {"d_kind": "projected", "d_input_res": 128}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2", help="torch threads to measure with, comma-separated")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per arm (after 2 warm-up steps)")
    ap.add_argument("--data", default="data/emoji64", help="dataset folder; random images if missing")
    a = ap.parse_args()
    ck = resolve_checkpoint(None)
    try:
        ds = load_dataset(a.data)
    except Exception:  # noqa: BLE001 - the speed does not depend on the pictures
        ds = ImageDataset(torch.randint(0, 255, (256, 64, 64, 3), dtype=torch.uint8).numpy(), name="random")
    res: dict = {"batch": 32, "img_per_s": {}}
    for threads in (int(t) for t in a.threads.split(",")):
        torch.set_num_threads(threads)
        for name, over in ARMS.items():
            cfg = TrainConfig(batch=32, augment="fixed", aug_p=1.0, **over)
            st = TrainState(ck.model_cfg, cfg, init=ck)
            t = p50(timeit(lambda st=st: st.train_step(ds), repeat=a.steps, warmup=2))
            res["img_per_s"][f"{name}@{threads}t"] = round(32 / t, 1)
            print(f"{name} with {threads} thread(s): {32 / t:.1f} img/s", flush=True)
    print(save_result("d-speed", res).read_text())


if __name__ == "__main__":
    main()
