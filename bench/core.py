"""Core speed figures: matmul/conv ceiling of this machine, G latency (batch 1 and 64) and its achieved FLOP/s,
training images/s at the default 64x64 config, and where a training step spends its time.

    python -m bench.core [--device cpu|cuda] [--train-steps 10]
Writes bench/results/core-<device>.json; `python -m bench.report` turns results into docs/benchmarks.md.
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import p50, save_result, timeit
from gan.config import ModelConfig, TrainConfig
from gan.dataset import ImageDataset, load_dataset
from gan.networks import Discriminator, Generator


def matmul_gflops(device: torch.device) -> float:
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = p50(timeit(lambda: a @ b, repeat=5, sync=device.type == "cuda"))
    return 2 * n**3 / t / 1e9


def conv_gflops(device: torch.device) -> float:
    x = torch.randn(32, 64, 32, 32, device=device)
    w = torch.randn(64, 64, 3, 3, device=device)
    t = p50(timeit(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeat=5, sync=device.type == "cuda"))
    return 2 * 32 * 64 * 64 * 9 * 32 * 32 / t / 1e9


def flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--data", default="data/emoji64", help="dataset folder; random images if missing")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = dev.type == "cuda"
    cfg = ModelConfig()
    G = Generator(cfg).to(dev).eval().requires_grad_(False)
    D = Discriminator(cfg).to(dev)
    res: dict = {"device": a.device, "model": {"G_params": sum(p.numel() for p in G.parameters()),
                                                "D_params": sum(p.numel() for p in D.parameters())}}
    res["matmul_gflops"] = round(matmul_gflops(dev), 1)
    res["conv3x3_gflops"] = round(conv_gflops(dev), 1)
    g_flops = flops(lambda: G(torch.randn(1, cfg.z_dim, device=dev)))
    d_flops = flops(lambda: D(torch.randn(1, 3, cfg.resolution, cfg.resolution, device=dev)))
    res["G_mflops_per_img"] = round(g_flops / 1e6, 1)
    res["D_mflops_per_img"] = round(d_flops / 1e6, 1)
    with torch.no_grad():
        for B in (1, 64):
            z = torch.randn(B, cfg.z_dim, device=dev)
            t = p50(timeit(lambda: G(z), repeat=20 if B == 1 else 5, sync=sync))
            res[f"G_latency_ms_b{B}"] = round(t * 1000, 2)
            res[f"G_gflops_b{B}"] = round(g_flops * B / t / 1e9, 1)

    # Training throughput with the real engine (default TrainConfig, batch 32).
    from gan.training import TrainState

    try:
        ds = load_dataset(a.data)
    except Exception:
        ds = ImageDataset(torch.randint(0, 255, (256, cfg.resolution, cfg.resolution, 3), dtype=torch.uint8).numpy(), name="random")
    st = TrainState(cfg, TrainConfig(batch=32, augment="fixed", aug_p=0.3), device=dev)
    step = lambda: st.train_step(ds)  # noqa: E731
    times = timeit(step, repeat=a.train_steps, warmup=2, sync=sync)
    res["train_img_per_s"] = round(32 / p50(times), 1)
    res["train_step_gflops_per_img"] = round(flops(step) / 32 / 1e9, 2)
    res["train_achieved_gflops"] = round(res["train_step_gflops_per_img"] * res["train_img_per_s"], 1)

    # Where a step's time goes (top ops by self time).
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(3):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    res["train_time_breakdown"] = {e.key: round(100 * e.self_cpu_time_total / total, 1) for e in rows[:6]}
    path = save_result(f"core-{dev.type}", res)
    print(path.read_text())


if __name__ == "__main__":
    main()
