"""Smoke test of the product's handlers on a device: what the app does for a user, timed, on the shipped model.

    python -m bench.gpu_smoke [--device cuda] [--out $OUT/gpu_smoke.json] [--checkpoint PATH]
Runs the same studio services the web page calls: render explore states (seed, sliders, mixing), an interpolation
with GIF/MP4, an inversion of a generated image, and a short fine-tune on a bundled set that hands the tuned model
back. Every step is timed; a failure is recorded with its message and the others still run. Exit status 1 if any
step failed. Used in the last minute of the one-call GPU run (tools.gpu_run) and runnable on the CPU.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gan.io import atomic_write_text
from gan.resolve import resolve_checkpoint
from gan.runtime import hardware_name, pick_device
from gan.sets import load_set
from studio import explore, media
from studio.finetune import finetune_config, run_finetune
from studio.models import serve


def timed(results: dict, name: str, fn: Callable[[], dict | None], device: torch.device) -> None:
    """Run fn, record its wall time (synchronised on CUDA) and what it returns, or its error."""
    t = time.perf_counter()
    try:
        out = fn() or {}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        results[name] = {"ok": True, "seconds": round(time.perf_counter() - t, 3), **out}
    except Exception as e:  # noqa: BLE001 - a smoke test reports every failure and goes on
        results[name] = {"ok": False, "seconds": round(time.perf_counter() - t, 3), "error": f"{type(e).__name__}: {e}",
                         "trace": traceback.format_exc()[-1500:]}
    print(f"{name}: {results[name]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", default=None, help="JSON results (default: print only)")
    ap.add_argument("--finetune-steps", type=int, default=20)
    ap.add_argument("--invert-steps", type=int, default=50)
    a = ap.parse_args()
    device = pick_device(a.device)
    ck = resolve_checkpoint(a.checkpoint)
    res: dict = {"device": hardware_name(device), "torch": torch.__version__, "checkpoint": str(ck.path)}
    model = serve(ck, "shipped", device)
    renderer = explore.Renderer()
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))

    def render() -> dict:
        times = []
        for i, st in enumerate([explore.ExploreState(seed=s) for s in range(10)] +
                               [explore.ExploreState(seed=3, coeffs=[1.5, -1.0], layer_start=2, layer_end=8, mix_seed=5,
                                                     mix_start=6, mix_end=model.num_ws)]):
            t = time.perf_counter()
            img = renderer.render(model, st)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
            assert img.dtype == np.uint8 and img.shape == (model.resolution, model.resolution, 3)
        return {"ms_first": round(times[0] * 1000, 1), "ms_median": round(float(np.median(times[1:])) * 1000, 2)}

    def interpolate() -> dict:
        anim = media.make_animation(model, [1, 2, 3], 16, "slerp", "w", True, 0.7, "const", 12, work / "interp")
        return {"frames": anim.frames, "video": anim.video.suffix}

    def invert() -> dict:
        target = work / "target.png"
        from PIL import Image

        Image.fromarray(renderer.render(model, explore.ExploreState(seed=7, psi=1.0))).save(target)
        last = None
        for ev in explore.invert_image(model, target, a.invert_steps, 0):
            last = ev
        return {"steps": last.step, "psnr_db": round(last.psnr, 2)}

    def finetune() -> dict:
        ds = load_set("hearts", size=model.resolution)
        cfg = finetune_config(len(ds), steps=a.finetune_steps)
        last = None
        for up in run_finetune(model, ds, cfg, threading.Event(), work / "ft", device=device):
            last = up
        assert last is not None and last.model is not None
        return {"status": last.status, "steps": len(last.history)}

    for name, fn in (("render", render), ("interpolate", interpolate), ("invert", invert), ("finetune", finetune)):
        timed(res, name, fn, device)
    if a.out:
        atomic_write_text(a.out, json.dumps(res, indent=1))
    raise SystemExit(0 if all(v.get("ok", True) for v in res.values() if isinstance(v, dict)) else 1)


if __name__ == "__main__":
    main()
