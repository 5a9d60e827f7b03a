"""Every CLI command on a tiny config, in-process (python -m gan ... calls the same main())."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.checkpoint import load_checkpoint
from gan.cli import main
from tests.conftest import make_discs


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(make_discs(12, size=24).images):
        Image.fromarray(im).save(folder / f"{i}.png")
    return folder


def test_cli_end_to_end(image_folder, tmp_path, capsys):
    data = tmp_path / "data"
    main(["dataset", str(image_folder), "--out", str(data), "--size", "16"])
    assert (data / "images.npy").exists()

    run = tmp_path / "run"
    main(["train", "--data", str(data), "--out", str(run), "--tiny", "16", "--steps", "3", "--batch", "4"])
    state = run / "state.safetensors"
    assert load_checkpoint(state).meta["step"] == 3
    main(["train", "--data", str(data), "--out", str(run), "--tiny", "16", "--steps", "5", "--batch", "4", "--resume"])
    assert load_checkpoint(state).meta["step"] == 5

    ft = tmp_path / "ft"
    main(["finetune", "--checkpoint", str(state), "--data", str(image_folder), "--steps", "2", "--batch", "4", "--out", str(ft),
          "--mirror"])
    ck = load_checkpoint(ft / "state.safetensors")
    assert ck.meta["step"] == 2 and ck.meta["parent"]["sha256"] == load_checkpoint(state).sha256
    assert ck.meta["train"]["xflip"] is True and load_checkpoint(state).meta["train"]["xflip"] is False

    grid = tmp_path / "grid.png"
    main(["generate", "--checkpoint", str(state), "--seeds", "0-3", "--psi", "0.7", "--out", str(grid), "--scale", "2"])
    assert Image.open(grid).size == (64, 64)  # 2x2 grid of 16 px upscaled 2x
    folder = tmp_path / "pngs"
    main(["generate", "--checkpoint", str(state), "--seeds", "5,9", "--out", str(folder)])
    assert sorted(p.name for p in folder.iterdir()) == ["seed0005.png", "seed0009.png"]

    gif = tmp_path / "walk.gif"
    main(["interpolate", "--checkpoint", str(state), "--seeds", "1,2,3", "--frames", "4", "--loop", "--out", str(gif)])
    im = Image.open(gif)
    assert im.n_frames == 12
    strip = tmp_path / "strip.png"
    main(["interpolate", "--checkpoint", str(state), "--seeds", "1,2", "--frames", "3", "--out", str(strip)])
    assert Image.open(strip).size == (16 * 4, 16)


def test_cli_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--checkpoint", str(tmp_path / "none.safetensors"), "--seeds", "0", "--out", str(tmp_path / "g.png")])
    assert e.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(SystemExit):
        main(["generate", "--checkpoint", str(bad), "--seeds", "0", "--out", str(tmp_path / "g.png")])
    assert "not a safetensors file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--checkpoint", str(bad), "--seeds", "9-1", "--out", str(tmp_path / "g.png")])
    assert "bad seed range" in capsys.readouterr().err


def test_cli_train_balance_by_a_label_the_images_lack_fails_before_the_run_starts(image_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", str(image_folder), "--out", str(tmp_path / "run"), "--tiny", "16", "--steps", "2",
              "--balance-by", "group"])
    assert "cannot balance the classes of 'group'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing half-written to trip a later --resume


def test_every_command_has_help(capsys):
    for cmd in ("dataset", "train", "finetune", "generate", "interpolate"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: python -m gan " + cmd in capsys.readouterr().out


def test_cli_directions_and_project(tmp_path, capsys):
    import torch

    from gan.checkpoint import save_checkpoint
    from gan.networks import Discriminator, Generator
    from tests.conftest import tiny_model_cfg

    cfg = tiny_model_cfg(16)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "c.safetensors", cfg, Generator(cfg), None, Discriminator(cfg))
    main(["directions", "--checkpoint", str(ckpt), "--method", "sefa", "--k", "4", "--out", str(tmp_path / "sefa")])
    main(["directions", "--checkpoint", str(ckpt), "--method", "ganspace", "--k", "4", "--samples", "2000", "--out", str(tmp_path / "pca")])
    assert (tmp_path / "sefa.npz").exists() and (tmp_path / "pca.json").exists()
    assert "ganspace: 4 directions" in capsys.readouterr().out
    Image.fromarray(make_discs(1, size=16).images[0]).save(tmp_path / "target.png")
    main(["project", str(tmp_path / "target.png"), "--checkpoint", str(ckpt), "--steps", "20", "--wplus-steps", "10",
          "--d-features", "--out", str(tmp_path / "proj")])
    assert np.load(tmp_path / "proj.npy").shape == (Generator(cfg).num_ws, cfg.w_dim)
    assert Image.open(tmp_path / "proj.png").size == (32, 16)


def test_cli_evaluate_inception_without_torch_fidelity_is_a_clear_error(tmp_path, capsys):
    import importlib.util

    from gan.checkpoint import save_checkpoint
    from gan.networks import Generator
    from tests.conftest import tiny_model_cfg

    if importlib.util.find_spec("torch_fidelity"):
        pytest.skip("torch-fidelity is installed here")
    cfg = tiny_model_cfg(16)
    ckpt = save_checkpoint(tmp_path / "c.safetensors", cfg, Generator(cfg))
    make_discs(8, size=16).save(tmp_path / "d")
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(ckpt), "--data", str(tmp_path / "d"), "--features", "inception"])
    err = capsys.readouterr().err
    assert "pip install torch-fidelity" in err and "--inception-weights" in err


def test_sigterm_stops_training_with_state_saved(image_folder, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gan", "train", "--data", str(image_folder), "--out", str(run),
                             "--tiny", "16", "--steps", "100000", "--batch", "4"], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = run / "log.jsonl"
    t0 = time.time()
    while not (log.exists() and log.stat().st_size > 0) and time.time() - t0 < 60:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    meta = load_checkpoint(run / "state.safetensors").meta
    assert 0 < meta["step"] < 100000 and "[stopped]" in out and "stopped on request" in out


@pytest.mark.skipif(not (Path(__file__).resolve().parent.parent / "checkpoints" / "emoji64.safetensors").exists(),
                    reason="no shipped checkpoint")
def test_cli_finetune_defaults_to_the_shipped_model_and_runs_for_seconds(image_folder, tmp_path, capsys):
    out = tmp_path / "ft"
    main(["finetune", "--data", str(image_folder), "--seconds", "3", "--keep-variety", "--out", str(out)])
    run = load_checkpoint(out / "state.safetensors")
    meta = run.meta
    assert meta["parent"]["path"].endswith("emoji64.safetensors")  # no --checkpoint: the shipped model
    assert 0 < meta["step"] < 2000 and meta["train"]["freeze_g_blocks"] > 0  # stopped by the clock, not the step cap
    # --keep-variety: the lowest synthesis blocks' features are the shipped model's, the higher ones moved
    shipped = dict(load_checkpoint(meta["parent"]["path"]).G_ema.named_parameters())
    tuned = dict(run.G_ema.named_parameters())
    assert torch.equal(tuned["synthesis_net.blocks.0.conv1.weight"], shipped["synthesis_net.blocks.0.conv1.weight"].float())
    assert not torch.equal(tuned["synthesis_net.blocks.3.conv1.weight"], shipped["synthesis_net.blocks.3.conv1.weight"].float())
    assert "for 3 s" in capsys.readouterr().out
