"""Load: N concurrent API users calling /generate against `python app.py`, idle and while a fine-tune runs.

    python -m bench.load [--users 50] [--calls 20] [--finetune-steps 2000]
Each user is its own gradio_client session and renders distinct seeds (no memo hits). Reports errors and latency
percentiles for both phases; writes bench/results/load.json.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

from bench.common import save_result
from tools.browser import serve


def users(url: str, n_users: int, calls: int, seed0: int) -> dict:
    """Run n_users threads of `calls` /generate requests each; latencies in ms and error messages."""
    from gradio_client import Client

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def user(u: int) -> None:
        try:
            c = Client(url, verbose=False)
        except Exception as e:  # noqa: BLE001 - a failed connect is a result, not a crash of the benchmark
            with lock:
                errors.append(f"connect: {type(e).__name__}: {e}")
            return
        for i in range(calls):
            t = time.perf_counter()
            try:
                c.predict(seed=seed0 + u * calls + i, psi=0.7, api_name="/generate")
                with lock:
                    lat.append((time.perf_counter() - t) * 1000)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"{type(e).__name__}: {str(e)[:200]}")
        c.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,)) for u in range(n_users)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=900)
    wall = time.perf_counter() - t0
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * (len(lat) - 1)))], 1) if lat else None  # noqa: E731
    return {"users": n_users, "calls": n_users * calls, "ok": len(lat), "errors": len(errors),
            "error_examples": sorted(set(errors))[:5], "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": pct(1.0),
            "mean_ms": round(statistics.mean(lat), 1) if lat else None, "wall_s": round(wall, 1),
            "requests_per_s": round(len(lat) / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--finetune-steps", type=int, default=2000)
    a = ap.parse_args()
    from gradio_client import Client

    res: dict = {}
    with serve() as (url, _):
        res["idle"] = users(url, a.users, a.calls, seed0=1_000_000)
        print("idle:", res["idle"], flush=True)
        trainer = Client(url, verbose=False)
        job = trainer.submit(data_source="bundled set", bundled="sketch-faces", steps=a.finetune_steps,
                             seconds=600, api_name="/finetune")  # the longest run the app allows; cancelled after
        t0 = time.time()
        while not any("step" in str(o[0]) for o in job.outputs()) and time.time() - t0 < 120:
            if job.done():  # refused or failed: a "during a fine-tune" figure without one would be wrong
                raise SystemExit(f"the fine-tune did not start: {job.exception() or job.outputs()[-1:]}")
            time.sleep(0.2)  # wait until it trains, not just queues
        res["during_finetune"] = users(url, a.users, a.calls, seed0=2_000_000)
        res["finetune_still_running"] = not job.done()
        steps = [o[0] for o in job.outputs() if "step" in str(o[0])]
        res["finetune_last_status"] = steps[-1] if steps else None
        job.cancel()
        trainer.close()
        print("during fine-tune:", res["during_finetune"], flush=True)
    idle, busy = res["idle"]["p95_ms"], res["during_finetune"]["p95_ms"]
    res["p95_ratio"] = round(busy / idle, 2) if idle and busy else None
    print(save_result("load", res).read_text())


if __name__ == "__main__":
    main()
