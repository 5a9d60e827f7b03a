"""Run every benchmark and rewrite docs/benchmarks.md:   python -m bench.run_all [--quick]"""
from __future__ import annotations

import argparse
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer trials and inversions")
    a = ap.parse_args()
    steps = [
        ["bench.core", "--train-steps", "5" if a.quick else "10"],
        ["bench.latent", "--n-invert", "5" if a.quick else "20"],
        ["bench.metrics"],
        ["bench.finetune", "--max-steps", "100" if a.quick else "400"],
        ["bench.ui_latency", "--trials", "8" if a.quick else "20"],
        ["bench.finetune_ui"],
        ["bench.load", "--users", "10" if a.quick else "50"],
        ["bench.scrub", "--drags", "1" if a.quick else "3", "--trials", "5" if a.quick else "15"],
        ["bench.render_speed", "--save", "--repeat", "2" if a.quick else "5"],
        ["bench.report"],
    ]
    for mod, *args in steps:
        print(f"== python -m {mod} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", mod, *args], check=True)


if __name__ == "__main__":
    main()
