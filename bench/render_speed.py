"""Render speed of full-size StyleGAN2 generators (what an imported config-f model costs in the app).

    python -m bench.render_speed [--repeat 5] [--resolutions 256 1024] [--save]

Milliseconds per image at batch 1 (mapping + synthesis, const noise, fp32) for config-f generators with random
weights: channel_base 32768, channel_max 512, z/w 512, 8 mapping layers, as imported NVlabs/rosinality models are
(resample_mode 'nvlabs'). Prints the median of `--repeat` runs after a warm-up; `--save` also writes
bench/results/render_speed.json. On a shared machine the figures are pessimistic.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import machine, p50, save_result, timeit
from gan.config import ModelConfig
from gan.networks import Generator


def config_f(resolution: int) -> ModelConfig:
    return ModelConfig(
        resolution=resolution,
        z_dim=512,
        w_dim=512,
        mapping_layers=8,
        channel_base=32768,
        channel_max=512,
        d_channel_base=32768,
        d_channel_max=512,
        resample_mode="nvlabs",
    )


@torch.no_grad()
def ms_per_image(resolution: int, repeat: int = 5, warmup: int = 1) -> dict:
    torch.manual_seed(0)
    G = Generator(config_f(resolution)).eval()
    z = torch.randn(1, 512)  # (1, z_dim)
    times = timeit(lambda: G(z, psi=0.7, noise_mode="const"), repeat=repeat, warmup=warmup)
    params = sum(p.numel() for p in G.parameters())
    return {
        "resolution": resolution,
        "batch": 1,
        "ms_per_image": round(p50(times) * 1000, 1),
        "runs_ms": [round(t * 1000, 1) for t in times],
        "params_M": round(params / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per resolution (median reported)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--save", action="store_true", help="write bench/results/render_speed.json")
    a = ap.parse_args(argv)
    m = machine()
    print(f"config-f G, batch 1, fp32, {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads)")
    rows = []
    for r in a.resolutions:
        row = ms_per_image(r, repeat=a.repeat)
        rows.append(row)
        print(
            f"{r:5d} px: {row['ms_per_image']:8.1f} ms/image (median of {a.repeat}; runs {row['runs_ms']}), "
            f"{row['params_M']} M parameters"
        )
    if a.save:
        print("wrote", save_result("render_speed", {"rows": rows}))
    return rows


if __name__ == "__main__":
    main()
