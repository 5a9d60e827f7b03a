"""The benchmark bookkeeping: earlier measurements of snapshots that are gone are kept, and say when they were made."""
import json

import bench.metrics as bench_metrics
from bench.report import metrics_section


def _row(nimg: int, fd: float) -> dict:
    m = {"fd": fd, "kid": 0.01, "precision": 0.5, "recall": 0.6}
    return {"nimg": nimg, "model": m, "real_vs_real": {**m, "fd": 0.7}}


def test_metrics_keep_rows_of_snapshots_not_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_metrics, "RESULTS", tmp_path)
    assert bench_metrics.carried_runs({}) == {}  # no earlier results
    prev = {"machine": {"date": "2026-11-20"},
            "runs": {"ship": _row(300_000, 3.0), "old_100k": _row(100_000, 9.0), "old_200k": {**_row(200_000, 5.0), "measured": "2026-11-01"}}}
    (tmp_path / "metrics.json").write_text(json.dumps(prev))
    carried = bench_metrics.carried_runs({"ship": _row(400_000, 2.5), "old_200k": _row(200_000, 5.1)})
    assert set(carried) == {"old_100k"} and carried["old_100k"]["measured"] == "2026-11-20"
    again = bench_metrics.carried_runs({"ship": _row(400_000, 2.5)})  # a row keeps the date it was first measured
    assert again["old_200k"]["measured"] == "2026-11-01"
    text = metrics_section({"machine": {"date": "2026-11-25", "python": "3.11", "torch": "2", "cpu": "x", "cores": 2,
                                        "torch_threads": 2},
                            "runs": {"ship": _row(400_000, 2.5), **carried}})
    assert "`ship` (400k images) | 2.50" in text and "`old_100k` (100k images, measured 2026-11-20) | 9.00" in text


def test_gpu_smoke_runs_the_product_handlers_on_the_cpu(tmp_path):
    """The product smoke test of the one-call GPU run, on the CPU with a tiny model: every handler runs, timed."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "smoke.json"
    env = {**os.environ, "GAN_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "bench.gpu_smoke", "--device", "cpu", "--checkpoint", str(ckpt),
                          "--out", str(out), "--finetune-steps", "2", "--invert-steps", "10"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert all(r[k]["ok"] for k in ("render", "interpolate", "invert", "finetune")), r
    assert r["finetune"]["steps"] == 2 and r["interpolate"]["frames"] == 48 and r["device"].startswith("cpu")


def test_diversity_report_reads_trajectory_results():
    from bench.report import diversity_section

    arm = lambda halve, gap, styled: {  # one arm's summary as bench.diversity writes it
        "steps_to_halve": halve, "gap_at_halving": gap, "gap_vs_styled_base_at_halving": styled,
        "gap_at_end": [0.5, 0.6], "gap_vs_styled_base_at_end": [0.9, 1.1], "kid_at_end": [0.3, 0.4],
        "subject_kept_at_halving": [], "subject_kept_at_end": []}
    r = {"machine": {"date": "2026-11-29", "python": "3.11", "torch": "2.13.0+cpu", "cpu": "x", "cores": 2, "torch_threads": 1},
         "set": "sketch-mix[:10]", "steps": 200, "eval_every": 25, "gap_samples": 128, "seeds": [0, 1],
         "base": {"kid": 4.3, "nn_gap_median": 4.2, "to_nearest_target_median": 11.8, "styled_nn_gap_median": 2.4},
         "arms": {"freeze_g_blocks=2": arm([25, 75], [0.62, 0.61], [1.11, 1.1]), "cdc_weight=2000": arm([None, None], [], [])}}
    text = diversity_section(r, "-x")
    assert "| freeze_g_blocks=2 | 25 / 75 | 0.62x / 0.61x (1.11x / 1.10x) | 0.30x / 0.40x | 0.50x / 0.60x (0.90x / 1.10x) | - |" in text
    assert "| cdc_weight=2000 | - / - | - |" in text and "sketch style: 2.40" in text


def test_conditional_report_shows_asked_shares_and_variety_for_conditional_models():
    from bench.report import conditional_section

    def model(cond: bool) -> dict:
        per = {"bucket_recognised": 0.11, "recognised": 0.32}
        m = {"conditional": cond, "recognised": 0.5, "kid_x1000": 31.0, "nimg": 2_900_000, "labels": ["subgroup"] if cond else [],
             "per_group": {"Food & Drink": per}}
        return m | ({"within_class_nn_ratio": {"median": 0.95, "below_0.8": 5, "classes": 22}} if cond else {})

    r = {"machine": {"date": "2026-11-29", "python": "3.11", "torch": "2.13.0+cpu", "cpu": "x", "cores": 2, "torch_threads": 2},
         "psi": 0.7, "judge": "judge.safetensors", "judge_card": {"seed": 2, "subgroup_acc": 0.7},
         "real": {"recognised_heldout": 0.63, "per_group": {"Food & Drink": 0.19}},
         "models": {"shipped": model(False), "S": model(True)}}
    text = conditional_section(r, "s14")
    assert "(issue #20, s14)" in text and "--tag s14" in text
    assert "| Food & Drink | 0.11 | 0.11 / 0.32 | 0.19 |" in text  # bucket for both, "asked" only for the conditional one
    assert "| within-class NN ratio, median (subgroups < 0.8) | - | 0.95 (5 of 22) | - |" in text
    r["models"]["S"]["per_group"]["Food & Drink"] |= {"bucket_recognised_90": [0.05, 0.2], "bucket_n": 61}
    r["models"]["S"]["label_pull"] = {"People & Body": 1.2, "Food & Drink": 0.6, "Objects": 0.8}
    text = conditional_section(r, "s16")
    assert "| Food & Drink | 0.11 | 0.11 (0.05-0.20, n 61) / 0.32 | 0.19 |" in text
    assert "| label pull, median of the non-people groups | - | 0.70 | - |" in text


def test_wilson_interval_contains_the_share_and_narrows_with_more_samples():
    from bench.conditional import wilson

    lo, hi = wilson(3, 30)
    assert lo < 0.1 < hi and 0.0 <= lo and hi <= 1.0
    lo2, hi2 = wilson(30, 300)
    assert lo < lo2 < 0.1 < hi2 < hi
    assert wilson(0, 20)[0] == 0.0 and wilson(0, 20)[1] > 0.05  # no hits still leaves room above zero
    assert wilson(0, 0) == [0.0, 1.0]


def test_best_of_k_keeps_the_highest_scored_candidate_and_k1_is_plain_sampling(tmp_path):
    import torch

    from bench.select_by_d import PSI, best_of_k
    from gan.checkpoint import load_checkpoint
    from tests.conftest import tiny_checkpoint

    ck = load_checkpoint(tiny_checkpoint(tmp_path / "t.safetensors"), need_d=True)
    G, D = ck.G_ema.eval(), ck.D.eval()
    plain = best_of_k(G, D, 6, 1, None, "const", seed=5, batch=4)  # (6, 3, 16, 16)
    assert plain.shape == (6, 3, 16, 16)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(1, 6, G.z_dim, generator=gen)[0]
    with torch.no_grad():
        ref = G.synthesis(G.mapping(z, psi=PSI), noise_mode="const").clamp(-1, 1)
    assert torch.allclose(plain, ref, atol=1e-5)
    picked = best_of_k(G, D, 6, 3, None, "const", seed=5, batch=4)
    z3 = torch.randn(3, 6, G.z_dim, generator=torch.Generator().manual_seed(5))  # (K, n, z_dim)
    with torch.no_grad():
        cands = G.synthesis(G.mapping(z3.reshape(18, -1), psi=PSI), noise_mode="const").clamp(-1, 1)
        scores = D(cands).reshape(3, 6)  # (K, n)
    best = cands.reshape(3, 6, 3, 16, 16)[scores.argmax(0), torch.arange(6)]
    assert torch.allclose(picked, best, atol=1e-5)
    assert (D(picked) >= D(plain) - 1e-5).all()  # never worse than the plain draw by D's own score
    assert not torch.allclose(picked, plain)  # some sample was replaced


def test_label_pull_is_zero_without_a_label_term_and_positive_with_one():
    import dataclasses

    import numpy as np
    import torch

    from bench.conditional import label_pull
    from gan.dataset import ImageDataset
    from gan.networks import Generator
    from tests.conftest import tiny_model_cfg

    subgroups, groups = ["face", "fruit", "flag"], ["Smileys", "Food", "Flags"]
    ds = ImageDataset(np.zeros((3, 16, 16, 3), np.uint8), name="t", license="CC0",
                      labels={"subgroup": subgroups, "group": groups},
                      items=[{"subgroup": i, "group": i} for i in range(3)])
    cfg = dataclasses.replace(tiny_model_cfg(), labels=("subgroup",), label_names=(tuple(subgroups),))
    torch.manual_seed(0)
    G = Generator(cfg)
    assert label_pull(G, ds, n=8) == {"Smileys": 0.0, "Food": 0.0, "Flags": 0.0}  # lambda 0: labels move nothing
    with torch.no_grad():
        G.mapping_net.label_proj.weight.normal_()
    G.mapping_net.label_lambda.fill_(1.0)
    pull = label_pull(G, ds, n=8)
    assert set(pull) == set(groups) and all(v > 0.05 for v in pull.values())
    assert label_pull(Generator(tiny_model_cfg()), ds) == {}  # unconditional


def test_floor_app_parses_the_state_as_the_app_does_and_draws_without_the_model():
    """bench/floor_app.py: the app's event path without the synthesis: the state parsed and checked as the app
    does (a bad value is the same clear error), a new 64x64 pattern for every seed."""
    import gradio as gr
    import pytest

    from bench.floor_app import draw
    from studio.explore import ExploreState

    st, img = draw(None, ExploreState(seed=3, psi=0.7).values(), None)
    assert st.seed == 3 and img.shape == (64, 64, 3) and img.dtype.name == "uint8"
    assert not (draw(None, ExploreState(seed=4).values(), None)[1] == img).all()
    bad = ExploreState(seed=3).values()
    bad[1] = "lots"  # psi
    with pytest.raises(gr.Error, match="bad parameters"):
        draw(None, bad, None)
