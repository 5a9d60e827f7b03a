"""Load: N concurrent users each rendering M explore states through the HTTP API, against today's server (the
commit before batched rendering) and this one, in the same run on the same machine.

    python -m bench.load [--users 50] [--calls 20] [--baseline-ref cae3301] [--finetune]
The client is light: one asyncio process with httpx speaking Gradio's REST protocol (POST /gradio_api/call/generate,
then its SSE result, then a GET of the PNG, as a page would), so it does not take the cores from the server the way
50 gradio_client threads do. Every user keeps one session (its session_hash), as a page does, and renders distinct
seeds (no memo hits). Reports errors, latency percentiles,
the server's CPU share (its CPU seconds / wall seconds / cores) and the client's, and the load average; with
--finetune, a second phase while another user's fine-tune runs. Also serves bench/floor_app.py (this app, its render
replaced by a pattern image: no model work) under the same load, the floor of Gradio's event path. Writes
bench/results/load.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import time

from bench.baseline import checkout, cpu_seconds, load_average
from bench.common import save_result
from studio.explore import ExploreState
from tools.browser import serve


async def one_render(http, url: str, seed: int, session: str) -> None:
    """One /generate call as Gradio's REST API serves it, in the user's session, then the image itself."""
    data = ExploreState(seed=seed, psi=0.7).values()
    r = await http.post(url + "gradio_api/call/generate", json={"data": data, "session_hash": session})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    event, payload = None, None
    async with http.stream("GET", url + f"gradio_api/call/generate/{event_id}") as s:
        async for line in s.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = line.split(":", 1)[1].strip()
                break
    if event != "complete":
        raise RuntimeError(f"{event}: {payload}")
    image = json.loads(payload)[0]
    png = await http.get(image["url"])
    png.raise_for_status()
    if png.content[:4] != b"\x89PNG":
        raise RuntimeError("not a PNG")


async def users(url: str, n_users: int, calls: int, seed0: int) -> dict:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=2 * n_users, max_keepalive_connections=2 * n_users)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        async def user(u: int) -> None:
            session = f"load{seed0}u{u}"  # one session per user, as a page keeps (a new session costs the server more)
            for i in range(calls):
                t = time.perf_counter()
                try:
                    await one_render(http, url, seed0 + u * calls + i, session)
                    lat.append((time.perf_counter() - t) * 1000)
                except Exception as e:  # noqa: BLE001 - a failed call is a result, not a crash of the benchmark
                    errors.append(f"{type(e).__name__}: {str(e)[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(n_users)))
        wall = time.perf_counter() - t0
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * (len(lat) - 1)))], 1) if lat else None  # noqa: E731
    return {"users": n_users, "calls": n_users * calls, "ok": len(lat), "errors": len(errors),
            "error_examples": sorted(set(errors))[:5], "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": pct(1.0),
            "wall_s": round(wall, 1), "requests_per_s": round(len(lat) / wall, 1)}


def phase(url: str, pid: int, n_users: int, calls: int, seed0: int) -> dict:
    """One load phase, with the CPU shares of the server and of this client."""
    cores = os.cpu_count() or 1
    s0, c0, t0 = cpu_seconds(pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = asyncio.run(users(url, n_users, calls, seed0))
    s1, c1, wall = cpu_seconds(pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    client = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return out | {"server_cpu_share": round((s1 - s0) / wall / cores, 2), "client_cpu_share": round(client / wall / cores, 2),
                  "load_avg": load_average()}


def measure(root, n_users: int, calls: int, finetune: bool, script: tuple[str, ...] = ("app.py",)) -> dict:
    procs: list[subprocess.Popen] = []
    res: dict = {}
    with serve(script, cwd=root, procs=procs) as (url, _):
        pid = procs[0].pid
        asyncio.run(users(url, 2, 2, seed0=999_000))  # warm-up: directions, first synthesis
        res["idle"] = phase(url, pid, n_users, calls, seed0=1_000_000)
        print("idle:", res["idle"], flush=True)
        if finetune:
            from bench.scrub import start_finetune

            c, job = start_finetune(url, seconds=600)
            try:
                res["during_finetune"] = phase(url, pid, n_users, calls, seed0=2_000_000)
                res["finetune_still_running"] = not job.done()
            finally:
                job.cancel()
                c.close()
            print("during fine-tune:", res["during_finetune"], flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--baseline-ref", default="cae3301", help="today's server: the commit before batched rendering")
    ap.add_argument("--finetune", action="store_true", help="also measure while another user's fine-tune runs")
    a = ap.parse_args()
    res: dict = {"baseline_ref": a.baseline_ref, "client": "asyncio + httpx, one process, one session per user"}
    with checkout(a.baseline_ref) as root:
        res["today"] = measure(root, a.users, a.calls, a.finetune)
    res["batched"] = measure(None, a.users, a.calls, a.finetune)
    # this app with a render that does no model work: what Gradio's event path alone allows (bench/floor_app.py)
    res["no_model_floor"] = measure(None, a.users, a.calls, False, script=("-m", "bench.floor_app"))
    # and today's server once more, so a drift of the shared machine's load shows
    with checkout(a.baseline_ref) as root:
        res["today_again"] = measure(root, a.users, a.calls, False)
    t, b = res["today"]["idle"]["p95_ms"], res["batched"]["idle"]["p95_ms"]
    res["p95_today_over_batched"] = round(t / b, 2) if t and b else None
    f = res["no_model_floor"]["idle"]["p95_ms"]
    res["p95_today_over_no_model_floor"] = round(t / f, 2) if t and f else None
    print(save_result("load", res).read_text())


if __name__ == "__main__":
    main()
