import dataclasses
import importlib
import json
import threading
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

import gan.augment
import gan.run_state as run_state
import gan.training as training
from gan.checkpoint import load_checkpoint, save_checkpoint
from gan.networks import Discriminator, Generator
from gan.run_state import new_or_resume, warm_start
from gan.training import TrainState, train
from tests.conftest import make_discs, tiny_model_cfg, tiny_train_cfg


class PoisonedD(torch.nn.Module):
    """A real discriminator whose scores are all `value` (nan, inf), still a function of its input (a graph)."""

    def __init__(self, D: torch.nn.Module, value: float):
        super().__init__()
        self.D, self.value = D, value

    def logits(self, img: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        u, _ = self.D.logits(img, c)  # (B, 1)
        return u * 0 + self.value, None


def run(state, ds, **kw):
    return list(train(state, ds, **kw))


def load_tool(name: str) -> ModuleType:
    """The module tools.<name> (run as `python -m tools.<name>`)."""
    return importlib.import_module(f"tools.{name}")


def test_events_stream_and_run_folder(model_cfg, discs, tmp_path):
    st = TrainState(model_cfg, tiny_train_cfg(steps=4, sample_every=2, checkpoint_every=2))
    events = run(st, discs, run_dir=tmp_path)
    kinds = [e.kind for e in events]
    assert kinds.count("step") == 4 and kinds[-1] == "done"
    assert "checkpoint" in kinds and kinds.count("sample") >= 2
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4] and steps[-1].nimg == 32
    assert {"loss_G", "loss_D", "D_real", "D_fake"} <= set(steps[0].losses)
    assert all(np.isfinite(v) for e in steps for v in e.losses.values())
    grid = next(e.grid for e in events if e.kind == "sample")
    assert grid.dtype == np.uint8 and grid.shape == (16, 64, 3)  # 4 seeds of 16 px in one row
    assert (tmp_path / "state.safetensors").exists() and list((tmp_path / "samples").glob("*.png"))
    lines = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3, 4]


def test_short_run_lowers_d_loss_and_moves_g_towards_data(discs):
    torch.manual_seed(0)
    cfg = tiny_model_cfg(16)
    st = TrainState(cfg, tiny_train_cfg(steps=150, batch=16, lr_g=0.004, lr_d=0.004, augment="none", ema_nimg=500))
    data_mean = discs.images.reshape(-1, 3).mean(0) / 127.5 - 1  # mean colour of the data, in [-1, 1]

    def colour_gap() -> float:
        with torch.no_grad():
            img = st.G_ema(torch.randn(64, cfg.z_dim, generator=torch.Generator().manual_seed(1)))
        return float((img.mean(dim=[0, 2, 3]) - torch.from_numpy(data_mean).float()).abs().mean())

    gap0 = colour_gap()
    losses = [e.losses["loss_D"] for e in train(st, discs) if e.kind == "step"]
    assert np.mean(losses[-20:]) < np.mean(losses[:5]) - 0.1, (np.mean(losses[:5]), np.mean(losses[-20:]))
    assert colour_gap() < 0.5 * gap0, (gap0, colour_gap())


def test_resume_continues_exactly(model_cfg, discs, tmp_path):
    cfg = tiny_train_cfg(steps=6, aug_p=0.3, augment="ada", ada_interval=1, ada_kimg=1, r1_interval=2)
    straight = TrainState(model_cfg, cfg)
    run(straight, discs)

    first = TrainState(model_cfg, dataclasses.replace(cfg, steps=3))
    run(first, discs, run_dir=tmp_path)
    resumed = new_or_resume(tmp_path, model_cfg, cfg, "cpu", resume=True)
    assert resumed.step == 3 and resumed.nimg == 24
    assert "train_changes" not in resumed.meta  # a longer run is not a change of recipe
    assert resumed.aug_p == pytest.approx(first.aug_p) and resumed.aug_p != 0.3  # p was adapted and kept
    st_a, st_b = first.opt_G.state_dict()["state"], resumed.opt_G.state_dict()["state"]
    assert all(torch.equal(st_a[k]["exp_avg"], st_b[k]["exp_avg"]) for k in st_a)
    assert float(st_b[0]["step"]) == 3
    run(resumed, discs, run_dir=tmp_path)
    assert resumed.step == 6 and resumed.aug_p == pytest.approx(straight.aug_p)
    for a, b in zip(straight.G.parameters(), resumed.G.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(straight.D.parameters(), resumed.D.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    steps = [json.loads(l)["step"] for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_records_changed_training_settings(model_cfg, discs, tmp_path):
    run(TrainState(model_cfg, tiny_train_cfg(steps=2)), discs, run_dir=tmp_path)
    cfg2 = tiny_train_cfg(steps=4, ema_nimg=5000, xflip=True)
    resumed = new_or_resume(tmp_path, model_cfg, cfg2, "cpu", resume=True)
    assert resumed.meta["train_changes"] == [{"at_nimg": 16, "changed": {"ema_nimg": [tiny_train_cfg().ema_nimg, 5000], "xflip": [False, True]}}]
    run(resumed, discs, run_dir=tmp_path)
    again = new_or_resume(tmp_path, model_cfg, dataclasses.replace(cfg2, steps=6, r1_gamma=1.0), "cpu", resume=True)
    hist = again.meta["train_changes"]  # carried through the save, and the new change appended
    assert [h["at_nimg"] for h in hist] == [16, 32] and hist[1]["changed"] == {"r1_gamma": [cfg2.r1_gamma, 1.0]}
    assert json.loads(json.dumps(hist)) == hist  # plain JSON for the card


def test_resume_refuses_wrong_situations(model_cfg, discs, tmp_path):
    with pytest.raises(FileNotFoundError):
        new_or_resume(tmp_path, model_cfg, tiny_train_cfg(), "cpu", resume=True)
    run(TrainState(model_cfg, tiny_train_cfg(steps=1)), discs, run_dir=tmp_path)
    with pytest.raises(FileExistsError):
        new_or_resume(tmp_path, model_cfg, tiny_train_cfg(), "cpu", resume=False)
    with pytest.raises(ValueError, match="different model config"):
        new_or_resume(tmp_path, tiny_model_cfg(8), tiny_train_cfg(), "cpu", resume=True)


def test_warm_start_from_an_exported_checkpoint_continues_the_run(model_cfg, discs, tmp_path, monkeypatch):
    import sys

    run_a, run_b = tmp_path / "a", tmp_path / "b"
    ada = dict(aug_p=0.3, ada_interval=1, ada_kimg=1)
    first = TrainState(model_cfg, tiny_train_cfg(steps=3, **ada))
    run(first, discs, run_dir=run_a)
    monkeypatch.setattr(sys, "argv", ["export", str(run_a / "state.safetensors"), str(tmp_path / "ship.safetensors")])
    load_tool("export_checkpoint").main()  # fp16 G_ema + D, no G and no optimizer state: what a lost run leaves
    cfg = tiny_train_cfg(steps=5, r1_gamma=0.5, **ada)
    st = new_or_resume(run_b, model_cfg, cfg, "cpu", resume=False, init=tmp_path / "ship.safetensors")
    assert st.step == 3 and st.nimg == 24 and st.aug_p == pytest.approx(first.aug_p, abs=1e-6) and st.aug_p != 0.3
    assert st.parent is None and st.opt_G.state_dict()["state"] == {}  # the same run, with fresh Adam states
    for a, b in zip(st.G.parameters(), first.G_ema.parameters()):  # G restarts from (the fp16 copy of) G_ema
        assert torch.equal(a, b.half().float())
    assert st.meta["train_changes"] == [{"at_nimg": 24, "changed": {"r1_gamma": [tiny_train_cfg().r1_gamma, 0.5]}}]
    assert st.meta["warm_starts"][0]["at_nimg"] == 24
    before = [p.clone() for p in st.G.parameters()]
    run(st, discs, run_dir=run_b)
    assert st.step == 5 and any(not torch.equal(a, b) for a, b in zip(before, st.G.parameters()))
    again = new_or_resume(run_b, model_cfg, dataclasses.replace(cfg, steps=6), "cpu", resume=True)
    assert again.meta["warm_starts"] == st.meta["warm_starts"]  # carried through later saves, to the card
    with pytest.raises(ValueError, match="not both"):
        new_or_resume(tmp_path / "c", model_cfg, cfg, "cpu", resume=True, init=tmp_path / "ship.safetensors")
    with pytest.raises(FileExistsError):
        new_or_resume(run_b, model_cfg, cfg, "cpu", resume=False, init=tmp_path / "ship.safetensors")
    with pytest.raises(ValueError, match="different model"):
        new_or_resume(tmp_path / "d", tiny_model_cfg(8), cfg, "cpu", resume=False, init=tmp_path / "ship.safetensors")


def test_augmentation_applied_to_real_and_fake_in_both_steps(model_cfg, discs, monkeypatch):
    calls = []
    real_augment = gan.augment.augment

    def spy(x, p, policy, gen=None):
        calls.append((x.shape[0], p, policy))
        return real_augment(x, p, policy, gen)

    monkeypatch.setattr(gan.augment, "augment", spy)
    st = TrainState(model_cfg, tiny_train_cfg(steps=1, augment="fixed", aug_p=0.5))
    run(st, discs)
    assert len(calls) == 3  # D step: real and fake; G step: fake
    assert len({c[1:] for c in calls}) == 1  # same p and policy for all


def test_xflip_mirrors_about_half_the_reals_and_only_when_asked(model_cfg):
    import numpy as np

    from gan.dataset import ImageDataset

    img = np.full((1, 16, 16, 3), 255, np.uint8)
    img[0, :, :4] = 0  # a black bar on the left: its mirror has the bar on the right
    ds = ImageDataset(img, name="bar", license="CC0 (synthetic)")
    plain = TrainState(model_cfg, tiny_train_cfg(batch=64)).batches.real_batch(ds)[0]  # (64, 3, 16, 16)
    assert plain.shape == (64, 3, 16, 16) and (plain[:, :, :, 0] == -1).all()
    mixed = TrainState(model_cfg, tiny_train_cfg(batch=64, xflip=True)).batches.real_batch(ds)[0]
    mirrored = mixed[:, 0, 0, -1] == -1  # (64,) bar on the right
    assert 16 < int(mirrored.sum()) < 48
    assert torch.equal(mixed[mirrored], plain[mirrored].flip(3)) and torch.equal(mixed[~mirrored], plain[~mirrored])


def test_stop_request_ends_cleanly(model_cfg, discs, tmp_path):
    stop = threading.Event()
    st = TrainState(model_cfg, tiny_train_cfg(steps=100))
    events = []
    for ev in train(st, discs, run_dir=tmp_path, stop=stop):
        events.append(ev)
        if ev.kind == "step" and ev.step == 3:
            stop.set()
    assert events[-1].kind == "stopped" and events[-1].step == 3
    assert load_checkpoint(tmp_path / "state.safetensors").meta["step"] == 3


def test_nan_loss_stops_and_keeps_last_good_weights(model_cfg, discs, tmp_path, monkeypatch):
    st = TrainState(model_cfg, tiny_train_cfg(steps=10))
    events = []
    for ev in train(st, discs, run_dir=tmp_path):
        events.append(ev)
        if ev.kind == "step" and ev.step == 2:
            good = {k: v.clone() for k, v in st.G.state_dict().items()}
            good_d = {k: v.clone() for k, v in st.D.state_dict().items()}
            monkeypatch.setattr(st.loss, "D", PoisonedD(st.D, float("nan")))
    assert events[-1].kind == "error"
    assert "nan" in events[-1].message.lower() and "last good weights" in events[-1].message
    assert all(torch.equal(v, good[k]) for k, v in st.G.state_dict().items())
    assert all(torch.equal(v, good_d[k]) for k, v in st.D.state_dict().items())
    assert load_checkpoint(tmp_path / "state.safetensors").meta["step"] == 2


def test_finetune_freezes_mapping_and_lower_d_blocks(model_cfg, discs, tmp_path):
    G, D = Generator(model_cfg), Discriminator(model_cfg)
    ck = load_checkpoint(save_checkpoint(tmp_path / "p.safetensors", model_cfg, G, None, D))
    cfg = training.TrainConfig.finetune_defaults(steps=3, batch=4, sample_every=0, checkpoint_every=0, freeze_d_blocks=1)
    st = TrainState(model_cfg, cfg, init=ck)
    run(st, make_discs(8))
    for (n, a), b in zip(G.named_parameters(), st.G.parameters()):
        if n.startswith("mapping_net."):
            assert torch.equal(a, b), n
    assert any(not torch.equal(a, b) for a, b in zip(G.synthesis_net.parameters(), st.G.synthesis_net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(D.blocks[0].parameters(), st.D.blocks[0].parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(D.blocks[1].parameters(), st.D.blocks[1].parameters()))
    assert st.parent["sha256"] == ck.sha256


def test_finetune_styles_only_keeps_conv_kernels(model_cfg, tmp_path):
    G, D = Generator(model_cfg), Discriminator(model_cfg)
    ck = load_checkpoint(save_checkpoint(tmp_path / "p.safetensors", model_cfg, G, None, D))
    cfg = training.TrainConfig.finetune_defaults(steps=3, batch=4, sample_every=0, checkpoint_every=0, g_parts="styles")
    st = TrainState(model_cfg, cfg, init=ck)
    run(st, make_discs(8))
    changed = {n for (n, a), b in zip(G.named_parameters(), st.G.parameters()) if not torch.equal(a, b)}
    assert any(".affine." in n for n in changed) and any(".torgb." in n for n in changed)
    assert not any(n.endswith(("conv1.weight", "conv0.weight", ".const")) for n in changed)
    with pytest.raises(ValueError, match="g_parts must be one of"):
        TrainState(model_cfg, training.TrainConfig.finetune_defaults(steps=1, g_parts="kernels"), init=ck)


def test_finetune_freeze_g_blocks_keeps_the_low_resolution_features(model_cfg, tmp_path):
    G, D = Generator(model_cfg), Discriminator(model_cfg)
    ck = load_checkpoint(save_checkpoint(tmp_path / "p.safetensors", model_cfg, G, None, D))
    cfg = training.TrainConfig.finetune_defaults(steps=3, batch=4, sample_every=0, checkpoint_every=0, freeze_g_blocks=2)
    st = TrainState(model_cfg, cfg, init=ck)
    run(st, make_discs(8))
    changed = {n for (n, a), b in zip(G.named_parameters(), st.G.parameters()) if not torch.equal(a, b)}
    low = ("synthesis_net.blocks.0.", "synthesis_net.blocks.1.")
    assert not any(n.startswith(low) and ".torgb." not in n for n in changed)  # const, convs, their affines
    assert any(n.startswith(low) and ".torgb." in n for n in changed)  # the colours of the low blocks still move
    assert any(n.startswith("synthesis_net.blocks.2.conv") for n in changed)
    with pytest.raises(ValueError, match="freeze_g_blocks=5 but G has 3 synthesis blocks"):  # a 16 px G: 4, 8, 16
        TrainState(model_cfg, training.TrainConfig.finetune_defaults(steps=1, freeze_g_blocks=5), init=ck)
    with pytest.raises(ValueError, match=r"frozen G blocks must be within \[0, 8\], got 9"):
        training.TrainConfig.finetune_defaults(steps=1, freeze_g_blocks=9)


def test_dataset_resolution_mismatch(model_cfg):
    st = TrainState(model_cfg, tiny_train_cfg())
    with pytest.raises(ValueError, match="16px"):
        run(st, make_discs(8, size=8))


def test_cap_noise_res_tool_makes_a_run_resumable_without_high_res_noise(model_cfg, discs, tmp_path):
    tool = load_tool("cap_noise_res")

    run(TrainState(model_cfg, tiny_train_cfg(steps=2)), discs, run_dir=tmp_path)
    path = tmp_path / "state.safetensors"
    before = load_checkpoint(path)
    removed = tool.cap_noise_res(path, 8)
    assert removed and all(".blocks.2." in k for k in removed)  # only the 16 px block lost its noise
    assert (tmp_path / "state.before_cap8.safetensors").exists()
    with pytest.raises(ValueError, match="different model config"):
        new_or_resume(tmp_path, model_cfg, tiny_train_cfg(steps=3), "cpu", resume=True)
    capped = dataclasses.replace(model_cfg, noise_max_res=8)
    st = new_or_resume(tmp_path, capped, tiny_train_cfg(steps=3), "cpu", resume=True)
    ws = before.G_ema.mapping(torch.randn(2, model_cfg.z_dim))
    # without noise the image is exactly what it was; the 16 px noise no longer exists in any mode
    assert torch.equal(st.G_ema.synthesis(ws, "none"), before.G_ema.synthesis(ws, "none"))
    assert not torch.equal(st.G_ema.synthesis(ws, "const"), before.G_ema.synthesis(ws, "const"))
    run(st, discs, run_dir=tmp_path)
    assert st.step == 3
    assert load_checkpoint(path).meta["surgery"][0]["noise_max_res"] == 8
    with pytest.raises(ValueError, match="cannot add noise"):
        tool.cap_noise_res(path, 16)


def test_cap_noise_res_tool_leaves_the_file_untouched_when_its_check_fails(model_cfg, discs, tmp_path, monkeypatch):
    from gan.checkpoint import CheckpointError

    tool = load_tool("cap_noise_res")
    run(TrainState(model_cfg, tiny_train_cfg(steps=1)), discs, run_dir=tmp_path)
    path = tmp_path / "state.safetensors"
    original = path.read_bytes()

    def failing_check(p, *a, **k):
        raise CheckpointError(f"{p}: does not fit")

    monkeypatch.setattr(tool, "load_checkpoint", failing_check)
    with pytest.raises(CheckpointError):
        tool.cap_noise_res(path, 8)
    assert path.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "samples", "state.safetensors"]


def test_widen_tool_keeps_images_and_scores_and_the_new_channels_learn(model_cfg, discs, tmp_path):
    tool = load_tool("widen")

    run(TrainState(model_cfg, tiny_train_cfg(steps=2)), discs, run_dir=tmp_path)
    path = tmp_path / "state.safetensors"
    before = load_checkpoint(path)
    widths = tool.widen(path, channel_min=16, d_channel_min=16)
    assert widths["G_from"] == [32, 16, 8] and widths["G_to"] == [32, 16, 16] and widths["D_to"] == [32, 16, 16]
    assert (tmp_path / "state.before_widen.safetensors").exists()
    with pytest.raises(ValueError, match="different model config"):
        new_or_resume(tmp_path, model_cfg, tiny_train_cfg(steps=3), "cpu", resume=True)
    wide = dataclasses.replace(model_cfg, channel_min=16, d_channel_min=16)
    st = new_or_resume(tmp_path, wide, tiny_train_cfg(steps=3), "cpu", resume=True)
    assert st.G.synthesis_net.blocks[2].conv1.weight.shape[:2] == (16, 16)  # (out, in) at 16 px, was (8, 8)
    ws = before.G_ema.mapping(torch.randn(3, model_cfg.z_dim))  # (3, num_ws, w_dim)
    img = before.G_ema.synthesis(ws, "const")  # (3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(st.G_ema.synthesis(ws, "const"), img, atol=1e-5, rtol=0)
        torch.testing.assert_close(st.D(img), before.D(img), atol=1e-4, rtol=0)
    assert st.G.synthesis_net.blocks[2].conv1.weight[:8, 8:].abs().max() == 0  # old outputs ignore new inputs
    run(st, discs, run_dir=tmp_path)
    assert st.step == 3
    assert st.G.synthesis_net.blocks[2].conv1.weight[:8, 8:].abs().max() > 0  # ... until the new channels learn
    assert load_checkpoint(path).meta["surgery"][-1]["op"] == "widen"
    with pytest.raises(ValueError, match="nothing to do"):
        tool.widen(path, channel_min=16, backup=False)
    with pytest.raises(ValueError, match="only widens"):
        tool.widen(path, channel_min=0, d_channel_min=0, channel_base=64, backup=False)


def test_export_tool_writes_a_lean_card_with_evaluate_metrics(model_cfg, discs, tmp_path, monkeypatch):
    import sys

    tool = load_tool("export_checkpoint")

    run(TrainState(model_cfg, tiny_train_cfg(steps=2)), discs, run_dir=tmp_path)
    ev = {"features": "emoji", "noise_mode": "none",
          "model": {"fd": 12.34567, "kid": 0.123456, "precision": 0.5555, "recall": 0.3333, "n_fake": 100, "n_real": 90},
          "real_vs_real": {"fd": 0.71234, "kid": -0.00021, "precision": 0.94, "recall": 0.93, "n_fake": 45, "n_real": 45},
          "recognised": {"model": 0.39512, "real": 0.63115, "real_images": "held-out", "n_fake": 100, "n_real": 366, "psi": 0.7,
                         "threshold": 0.5}}
    (tmp_path / "ev.json").write_text(json.dumps(ev))
    out = tmp_path / "ship" / "model.safetensors"
    monkeypatch.setattr(sys, "argv", ["export", str(tmp_path / "state.safetensors"), str(out),
                                      "--noise-mode", "none", "--eval", str(tmp_path / "ev.json"),
                                      "--recipe", "python -m gan train --config tiny.json"])
    tool.main()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["recipe"] == "python -m gan train --config tiny.json"
    assert card["metrics"]["fd"] == 12.346 and card["metrics"]["real_vs_real_floor"]["fd"] == 0.7123
    assert card["metrics"]["noise_mode"] == "none" and card["default_noise_mode"] == "none"
    assert card["metrics"]["recognised"] == {"model": 0.395, "real": 0.631, "psi": 0.7, "threshold": 0.5, "real_images": "held-out", "n_fake": 100}
    assert card["storage_dtype"] == "float16" and card["exported_from"]["step"] == 2
    shipped, state = load_checkpoint(out, need_d=True), load_checkpoint(tmp_path / "state.safetensors")
    assert shipped.G is None and shipped.D is not None  # G_ema for exploring, D for fine-tuning; no raw G
    for k, v in state.G_ema.state_dict().items():
        assert torch.equal(shipped.G_ema.state_dict()[k], v.half().float())
    assert out.stat().st_size < (tmp_path / "state.safetensors").stat().st_size / 2
    # metrics measured in another noise mode than the card recommends are refused
    monkeypatch.setattr(sys, "argv", ["export", str(tmp_path / "state.safetensors"), str(tmp_path / "other.safetensors"),
                                      "--noise-mode", "const", "--eval", str(tmp_path / "ev.json")])
    with pytest.raises(SystemExit, match="measured with noise mode 'none'"):
        tool.main()
    assert not (tmp_path / "other.safetensors").exists()
    # a run whose settings changed on resume says so on its card
    assert "recipe_note" not in card and "train_changes" not in card
    run(new_or_resume(tmp_path, model_cfg, tiny_train_cfg(steps=3, xflip=True), "cpu", resume=True), discs, run_dir=tmp_path)
    monkeypatch.setattr(sys, "argv", ["export", str(tmp_path / "state.safetensors"), str(out)])
    tool.main()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["train_changes"] == [{"at_nimg": 16, "changed": {"xflip": [False, True]}}] and "final settings" in card["recipe_note"]


def test_docs_figures_merge_run_logs_and_keep_a_bucketed_copy(tmp_path):
    tool = load_tool("make_docs_figures")
    row = lambda step, loss: {"step": step, "nimg": step * 32, "aug_p": 0.5, "wall_s": step, "loss_G": loss, "loss_D": 1.0,
                              "D_real": 0.1, "D_fake": -0.1, "sign_real": 0.6}
    kept, new = tmp_path / "kept.jsonl", tmp_path / "log.jsonl"
    kept.write_text("".join(json.dumps(row(s, 2.0)) + "\n" for s in range(10, 410, 10)))  # steps 10..400
    new.write_text("".join(json.dumps(row(s, 1.0)) + "\n" for s in range(310, 610, 10)))  # a later stretch from 310
    rows = tool.merge_logs([kept, new])
    assert [r["step"] for r in rows] == list(range(10, 610, 10))  # the later log replaces the overlap
    assert {r["loss_G"] for r in rows if r["step"] >= 310} == {1.0}
    buckets = tool.bucket_rows(rows)
    assert all(b["nimg"] // tool.BUCKET_NIMG != a["nimg"] // tool.BUCKET_NIMG for a, b in zip(buckets, buckets[1:]))
    assert len(buckets) == len({r["nimg"] // tool.BUCKET_NIMG for r in rows}) and buckets[-1]["step"] == 600
    assert buckets[0]["loss_G"] == 2.0 and buckets[-1]["loss_G"] == 1.0
    assert tool.bucket_rows(buckets) == buckets  # a kept log is already bucketed: the figure is the same from either
    tool.loss_curves(rows, tmp_path / "curves.png", [(9600, "warm start")])
    assert Image.open(tmp_path / "curves.png").size[0] > 500
    assert tool.run_events({"warm_starts": [{"at_nimg": 9600}], "train_changes": [{"at_nimg": 320, "changed": {"xflip": [0, 1]}}]}) == \
        [(320, "xflip 1"), (9600, "warm start")]


def test_average_snapshots_tool_means_g_ema_and_keeps_the_last_d(tmp_path, monkeypatch):
    import sys

    from tests.conftest import tiny_checkpoint

    tool = load_tool("average_snapshots")

    paths = [tiny_checkpoint(tmp_path / f"snap{i}.safetensors", seed=i) for i in range(3)]
    snaps = [load_checkpoint(p, need_d=True) for p in paths]
    out = tmp_path / "avg.safetensors"
    monkeypatch.setattr(sys, "argv", ["average", str(out), *map(str, paths)])
    tool.main()
    avg = load_checkpoint(out, need_d=True)
    for k, v in avg.G_ema.state_dict().items():
        want = sum(s.G_ema.state_dict()[k] for s in snaps) / 3
        assert torch.allclose(v, want, atol=1e-6), k
    for k, v in avg.D.state_dict().items():  # D is the last snapshot's, untouched
        assert torch.equal(v, snaps[-1].D.state_dict()[k])
    assert [s["sha256"] for s in avg.meta["averaged_from"]] == [s.sha256 for s in snaps]
    z = torch.randn(2, avg.model_cfg.z_dim)
    img = avg.G_ema.synthesis(avg.G_ema.mapping(z), "const")  # (B, 3, H, W)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    assert not torch.allclose(img, snaps[-1].G_ema.synthesis(snaps[-1].G_ema.mapping(z), "const"))
    # snapshots of different models cannot be averaged; one snapshot is not an average
    other = tiny_checkpoint(tmp_path / "other.safetensors", resolution=32)
    monkeypatch.setattr(sys, "argv", ["average", str(tmp_path / "bad.safetensors"), str(paths[0]), str(other)])
    with pytest.raises(SystemExit, match="different model config"):
        tool.main()
    with pytest.raises(ValueError, match="at least two"):
        tool.average_snapshots([paths[0]])
    assert not (tmp_path / "bad.safetensors").exists()


# ---- the GPU engine, checked on the CPU ----------------------------------------------------------------------


class _SyncCounter(TorchDispatchMode):
    """Counts what would stall a GPU step: scalar reads (.item(), float(), bool(), `if tensor`), tensors made from
    host data (uploads on a real device) and copies between devices."""

    def __init__(self):
        super().__init__()
        self.reads = self.uploads = self.cross_device = self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        elif func in (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default):
            self.uploads += 1
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst_dev = args[0].device if func is torch.ops.aten.copy_.default else kwargs.get("device", src.device)
            if isinstance(src, torch.Tensor) and src.device != torch.device(dst_dev):
                self.cross_device += 1
        return func(*args, **kwargs)


def test_a_training_step_reads_nothing_back_from_the_device(model_cfg, discs):
    """The CUDA path (sync_free) on the CPU as 'device': D step with R1, G step, EMA and an ADA adjustment, with
    xflip, style mixing and augmentation on, make no scalar read, no upload and no cross-device copy."""
    cfg = tiny_train_cfg(steps=10, augment="ada", aug_p=0.3, ada_interval=2, r1_interval=2, xflip=True, log_every=4)
    st = TrainState(model_cfg, cfg, sync_free=True)  # what a GPU state does
    st.train_step(discs)  # first step: Adam state born, dataset 'uploaded' once
    counter = _SyncCounter()
    with counter:
        for _ in range(3):  # steps 2-4: an R1 step, an ADA step, a plain step; none is a log step (read_stats)
            st.train_step(discs)
    assert (counter.reads, counter.uploads, counter.cross_device) == (0, 0, 0)
    assert counter.ops > 100  # it did count the step's ops
    means, _ = st.read_stats()  # the log step reads the window, once
    assert set(means) >= {"loss_G", "loss_D", "D_real", "D_fake", "sign_real", "r1"} and st.aug_p != 0.3

    host = TrainState(model_cfg, cfg)  # the CPU path: the host guard reads each phase's loss (free on a CPU)
    host.train_step(discs)
    counter = _SyncCounter()
    with counter:
        host.train_step(discs)
    assert counter.reads > 0 and counter.uploads == 0


def test_device_guard_rolls_back_to_the_last_checked_state(model_cfg, discs, tmp_path, monkeypatch):
    """On a GPU a non-finite loss is found at the next log step; the whole state goes back to the last check."""
    st = TrainState(model_cfg, tiny_train_cfg(steps=10, log_every=2, aug_p=0.2), sync_free=True)
    events = []
    for ev in train(st, discs, run_dir=tmp_path):
        events.append(ev)
        if ev.kind == "step" and ev.step == 2:
            good = {k: v.clone() for k, v in st.state_tensors().items()}
            monkeypatch.setattr(st.loss, "D", PoisonedD(st.D, float("inf")))
    assert events[-1].kind == "error" and "rolled back to step 2" in events[-1].message
    assert "last good weights" in events[-1].message and "non-finite loss" in events[-1].message
    assert st.step == 2 and st.nimg == 16
    assert all(torch.equal(v, good[k]) for k, v in st.state_tensors().items())
    assert load_checkpoint(tmp_path / "state.safetensors").meta["step"] == 2
    # diverging before the first check goes back to the start (Adam states born since are dropped)
    st = TrainState(model_cfg, tiny_train_cfg(steps=10, log_every=3), sync_free=True)
    start = {k: v.clone() for k, v in st.state_tensors().items()}
    monkeypatch.setattr(st.loss, "D", PoisonedD(st.D, float("nan")))
    events = run(st, discs)
    assert events[-1].kind == "error" and st.step == 0 and st.opt_G.state_dict()["state"] == {}
    assert all(torch.equal(v, start[k]) for k, v in st.state_tensors().items())


def test_bf16_autocast_trains_with_finite_losses_and_runs_the_convs_in_bf16(model_cfg, discs):
    # CPU autocast supports bf16 convolutions on every x86/ARM CPU (emulated where the hardware lacks bf16 units),
    # so this runs everywhere CI does; CUDA uses the same code path.
    cfg = tiny_train_cfg(steps=3, mixed_precision=True, aug_p=0.3, augment="fixed", r1_interval=2)
    st = TrainState(model_cfg, cfg)
    assert st.loss.amp_dtype == torch.bfloat16
    conv_dtypes = set()

    class ConvDtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default:
                conv_dtypes.add(args[0].dtype)
            return func(*args, **(kwargs or {}))

    with ConvDtypes():
        st.train_step(discs)
    assert conv_dtypes == {torch.bfloat16}
    events = run(st, discs)
    losses = [e.losses for e in events if e.kind == "step"]
    assert len(losses) == 2 and all(np.isfinite(v) for l in losses for v in l.values())
    assert all(p.dtype == torch.float32 for p in st.G.parameters())  # weights and Adam stay fp32
    assert TrainState(model_cfg, tiny_train_cfg()).loss.amp_dtype is None  # off by default on the CPU


def test_loss_phases_match_the_combined_d_step(model_cfg, discs):
    """Dmain then Dreg accumulate the same D gradient as Dboth (one forward over the reals)."""
    from gan.loss import StyleGAN2Loss

    st = TrainState(model_cfg, tiny_train_cfg(augment="none", r1_gamma=1.0, r1_interval=4))
    loss = StyleGAN2Loss(st.G, st.D, lambda x: x, r1_gamma=1.0, r1_interval=4)
    real, (z, z2, cutoff) = st.batches.real_batch(discs)[0], st.batches.latents()
    torch.manual_seed(5)
    st.D.requires_grad_(True)
    stats = loss.accumulate_gradients("Dboth", real, z, z2, cutoff)
    both = [p.grad.clone() for p in st.D.parameters()]
    st.D.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same G noise for the fakes
    loss.accumulate_gradients("Dmain", real, z, z2, cutoff)
    reg = loss.accumulate_gradients("Dreg", real, z)
    for a, p in zip(both, st.D.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-5, rtol=1e-4)
    assert set(stats) == {"loss_D", "D_real", "D_fake", "sign_real", "r1"} and set(reg) == {"r1"}
    with pytest.raises(ValueError, match="phase"):
        loss.accumulate_gradients("Greg", real, z)


def test_checkpoint_cadence_in_seconds(model_cfg, discs, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # each perf_counter() call advances 10 s
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    cfg = tiny_train_cfg(steps=6, log_every=1, checkpoint_every_s=25.0, sample_every_s=45.0)
    events = run(TrainState(model_cfg, cfg), discs, run_dir=tmp_path)
    ckpts = [e.step for e in events if e.kind == "checkpoint"]
    samples = [e.step for e in events if e.kind == "sample"]
    assert 1 <= len(ckpts) < 6 and ckpts == sorted(set(ckpts))
    assert samples[0] == 0 and samples[-1] == 6 and len(samples) >= 3
    assert "checkpoint_every_s" not in json.dumps(
        run_state.train_config_changes(cfg, dataclasses.replace(cfg, checkpoint_every_s=1.0)))  # bookkeeping only


def test_gpu_run_end_to_end_on_the_cpu(model_cfg, discs, tmp_path, monkeypatch):
    """tools.gpu_run with a tiny config: trains two arms side by side for a few seconds from a run's weights,
    evaluates, and leaves the lean export + card, the fp32 G/D to continue from, a summary and a log."""
    tool = load_tool("gpu_run")
    discs.save(tmp_path / "data")
    tool.main(["--pack", str(tmp_path / "data"), str(tmp_path / "data.npz")])  # the dataset travels compressed
    run(TrainState(model_cfg, tiny_train_cfg(steps=2)), discs, run_dir=tmp_path / "first")  # weights with a history
    cfg = {"data": str(tmp_path / "data"), "model": dataclasses.asdict(model_cfg),
           "train": {**{k: v for k, v in dataclasses.asdict(tiny_train_cfg()).items() if k != "steps"}, "log_every": 2}}
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    monkeypatch.setenv("GPU_RUN_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    summary = tool.main(["--device", "cpu", "--config", str(tmp_path / "tiny.json"), "--data", str(tmp_path / "data.npz"), "--init", str(tmp_path / "first" / "state.safetensors"),
                         "--arm", "batch=8", "--arm", "batch=4,lr_g=0.001", "--budget-s", "75", "--eval-s", "40",
                         "--eval-n", "32", "--out", str(out)])
    # smoke.json (the product smoke test) is there only when the arms left enough of the budget, which depends on
    # how busy the machine is
    names = sorted(p.name for p in out.iterdir() if p.name != "smoke.json")
    assert names == ["emoji64.json", "emoji64.safetensors", "log.jsonl", "samples.png", "state_D.safetensors",
                     "state_G.safetensors", "summary.json"]
    assert all(p.stat().st_size <= 16 << 20 for p in out.iterdir())
    arms = summary["arms"]
    assert [a["arm"] for a in arms] == ["arm0", "arm1"] and arms[1]["overrides"] == {"batch": 4, "lr_g": 0.001}
    assert all(a["nimg"] > a["nimg_start"] == 16 and a["img_per_s"] > 0 and "fd" in a["metrics"] for a in arms)
    card = json.loads((out / "emoji64.json").read_text())
    assert card["metrics"]["n_fake"] == 32 and card["warm_starts"][-1]["at_nimg"] == 16
    lines = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert {l["arm"] for l in lines} == {"arm0", "arm1"} and all("img_per_s" in l for l in lines)
    # the next call continues from the returned fp32 files: G itself (not G_ema) and D, at the images seen
    merged = load_checkpoint(tool.merge_returned(out, tmp_path / "merged.safetensors"), need_d=True)
    best = load_checkpoint(tmp_path / "work" / summary["best"] / "state.safetensors", need_d=True)
    st = warm_start(merged, tiny_train_cfg(steps=merged.meta["step"] + 1))
    assert st.nimg == best.meta["nimg"] and st.meta["warm_starts"][-1]["reset"] == "Adam states"
    assert all(torch.equal(a, b) for a, b in zip(st.G.parameters(), best.G.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(st.D.parameters(), best.D.parameters()))
