"""Crash safety: a training run killed with SIGKILL resumes from its last checkpoint, and the step count, the
image count and the logged curve continue from there (no torn state file, no forked curve)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from gan.checkpoint import load_checkpoint, read_metadata
from tests.conftest import make_discs

ROOT = Path(__file__).resolve().parent.parent
BATCH = 4


def train_cmd(data: Path, run: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gan", "train", "--config", str(config), "--data", str(data), "--out", str(run),
            "--tiny", "16", "--batch", str(BATCH), *extra]


def test_sigkill_mid_run_then_resume_continues_the_count_and_the_curve(tmp_path):
    data = tmp_path / "data"
    make_discs(16, size=16).save(data)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"train": {"checkpoint_every": 5, "log_every": 1, "sample_every": 0}}))
    run = tmp_path / "run"
    state = run / "state.safetensors"
    proc = subprocess.Popen(train_cmd(data, run, config, "--steps", "100000"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()  # wait for a second checkpoint, so the kill lands mid-run with steps logged past it
        while time.time() - t0 < 120:
            if state.exists() and read_metadata(state).get("step", 0) >= 10:
                break
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    saved = load_checkpoint(state)  # the state on disk is whole (written via temp file + rename)
    step, nimg = int(saved.meta["step"]), int(saved.meta["nimg"])
    assert step >= 10 and step % 5 == 0 and nimg == step * BATCH
    logged = [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    assert max(logged) >= step  # the run had gone on past its last checkpoint when it died

    res = subprocess.run(train_cmd(data, run, config, "--steps", str(step + 3), "--resume"), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    final = load_checkpoint(state).meta
    assert final["step"] == step + 3 and final["nimg"] == nimg + 3 * BATCH
    steps = [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    assert steps == list(range(1, step + 4)), steps  # cut back to the checkpoint, then continued: no fork
