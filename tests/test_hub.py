"""GAN_CHECKPOINT=hf://USER/REPO/FILE: fetched with huggingface_hub; offline (HF_HUB_OFFLINE=1) it fails clearly and
the app falls back to the shipped model. Run in subprocesses, since huggingface_hub reads HF_HUB_OFFLINE on import."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GAN_CACHE_DIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_hub_checkpoint_offline_is_a_clear_error(tmp_path):
    code = (
        "from gan.checkpoint import CheckpointError\n"
        "from gan.resolve import checkpoint_file\n"
        "for spec in ('hf://someone/some-model/G.safetensors', 'hf://only-a-name'):\n"
        "    try:\n"
        "        checkpoint_file(spec)\n"
        "    except CheckpointError as e:\n"
        "        print('ERR', e)\n"
        "print(checkpoint_file('checkpoints/x.safetensors'))\n"
    )
    out = run(code, tmp_path).stdout
    assert "could not be fetched from the Hugging Face Hub" in out and "hf://USER/REPO/FILE" in out
    assert out.strip().endswith("checkpoints/x.safetensors")  # plain paths pass through


@pytest.mark.skipif(not (ROOT / "checkpoints" / "emoji64.safetensors").exists(), reason="no shipped checkpoint")
def test_app_falls_back_to_the_shipped_model_offline(tmp_path):
    code = "from app import create_app\ncreate_app()\nprint('built')\n"
    res = run(code, tmp_path, GAN_CHECKPOINT="hf://someone/some-model/G.safetensors")
    assert res.returncode == 0 and "built" in res.stdout, res.stderr[-2000:]
    assert "could not be fetched" in res.stderr and "showing the shipped model instead" in res.stderr
