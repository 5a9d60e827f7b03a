"""The scrub and load benchmarks' report sections read the results their scripts write (no browser here)."""
from __future__ import annotations

import json

from bench.common import RESULTS
from bench.report import load_section, scrub_section

MACHINE = {"date": "2026-12-06", "python": "3.11", "torch": "2.13", "cpu": "cpu", "cores": 2, "torch_threads": 2}


def drag(share: float, requests: float) -> dict:
    return {"drags": 1, "share_of_moves_with_new_picture": share, "pictures_per_s": 10.0, "requests_per_drag": requests,
            "raf_fps": 60.0, "load_avg": "1 1 1", "runs": [{"seconds": 4.2}]}


def test_scrub_section_names_every_figure():
    r = {"machine": MACHINE, "baseline_ref": "abc1234",
         "seed_to_pixels": {"bare": {"p50_ms": 60, "p90_ms": 70, "trials": 3}, "strips": {"p50_ms": 90, "p90_ms": 99, "trials": 3},
                            "today": {"p50_ms": 80, "p90_ms": 88, "trials": 3}, "load_avg": "2 2 2"},
         "seed_ratio_p50": {"strips": 1.5, "today": 1.33},
         "strips": {"drag_idle": drag(0.98, 1), "drag_during_finetune": drag(0.97, 1),
                    "strip_ready": {"warm": {"p50_ms": 40, "p95_ms": 50, "trials": 3},
                                    "cold": {"p50_ms": 300, "p95_ms": 400, "trials": 3}, "load_avg": "3 3 3"}},
         "today": {"drag_idle": drag(0.9, 61), "drag_during_finetune": drag(0.59, 109)}}
    text = scrub_section(r)
    assert "| this server, during a fine-tune | **97%** |" in text and "| **109** |" in text
    assert "**40 ms** p50" in text and "**300 ms** p50" in text and "**1.5x**" in text and "abc1234" in text


def test_load_section_compares_today_and_batched():
    row = lambda p95: {"users": 50, "calls": 1000, "ok": 1000, "errors": 0, "p50_ms": 1, "p95_ms": p95,  # noqa: E731
                       "max_ms": 2, "requests_per_s": 3, "server_cpu_share": 0.5, "client_cpu_share": 0.1,
                       "load_avg": "4 4 4"}
    r = {"machine": MACHINE, "baseline_ref": "abc1234", "client": "asyncio + httpx, one process",
         "today": {"idle": row(3000)}, "batched": {"idle": row(1500)}, "today_again": {"idle": row(3100)},
         "p95_today_over_batched": 2.0}
    text = load_section(r)
    assert "**3000 ms**" in text and "**1500 ms**" in text and "**2.0**" in text


def test_committed_results_render():
    for name, fn in (("scrub", scrub_section), ("load", load_section)):
        path = RESULTS / f"{name}.json"
        if path.exists():
            assert "Machine:" in fn(json.loads(path.read_text()))
