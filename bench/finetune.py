"""Fine-tuning speed: how long until the KID to the target set halves, on the shipped model and a bundled set.

    python -m bench.finetune [--set sketch-faces] [--max-steps 300] [--every 10]
Training time excludes the KID evaluations (256 samples each).
"""
from __future__ import annotations

import argparse
import threading
import time

from bench.common import save_result
from gan import studio
from gan.defaults import pick_device
from gan.evaluate import kid_to_target
from gan.sets import load_set
from gan.training import TrainState


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="sketch-faces")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=10)
    a = ap.parse_args()
    device = pick_device()
    base = studio.ModelStore(None, device=device).base
    ds = load_set(a.set)
    cfg = studio.finetune_config(a.max_steps, 8e-4, "ada", True, 1, len(ds))
    st = TrainState(base.checkpoint.model_cfg, cfg, device=device, init=base.checkpoint)
    kid0 = kid_to_target(st.G_ema.eval(), ds)
    curve = [{"step": 0, "train_s": 0.0, "kid": kid0}]
    train_s, halved = 0.0, None
    stop = threading.Event()
    while st.step < a.max_steps and not stop.is_set():
        t = time.perf_counter()
        st.train_step(ds)
        train_s += time.perf_counter() - t
        if st.step % a.every == 0:
            kid = kid_to_target(st.G_ema.eval(), ds)
            curve.append({"step": st.step, "train_s": round(train_s, 1), "kid": kid})
            print(f"step {st.step}: {train_s:.1f} s, KID {kid:.4f}", flush=True)
            if halved is None and kid <= kid0 / 2:
                halved = {"step": st.step, "train_s": round(train_s, 1), "images": st.nimg}
                break
    res = {"set": a.set, "images_in_set": len(ds), "batch": cfg.batch, "kid_before": kid0, "halved": halved,
           "curve": curve, "device": device.type}
    print(save_result(f"finetune-{device.type}", res).read_text()[:1500])


if __name__ == "__main__":
    main()
