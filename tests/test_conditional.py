"""Label-conditional G and D (transitional, design notes section 9) and the add_labels surgery tool."""
import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from gan.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from gan.config import ModelConfig, from_dict, to_dict
from gan.dataset import ImageDataset
from gan.labels import LabelSpace
from gan.networks import Discriminator, Generator, estimate_class_w_avg, labels_to_c
from tests.conftest import tiny_checkpoint, tiny_model_cfg

GROUPS = ("Smileys", "Food", "Flags")
STYLES = ("noto", "twemoji")


def labelled_cfg(**kw) -> ModelConfig:
    return dataclasses.replace(tiny_model_cfg(), labels=("group", "style"), label_names=(GROUPS, STYLES), **kw)


def make_trained_like(G: Generator, D: Discriminator | None = None, lam: float = 1.0, seed: int = 1) -> None:
    """Give the zero-initialised label projections random weights, as training would, and set lambda."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        G.mapping_net.label_proj.weight.copy_(torch.randn(G.mapping_net.label_proj.weight.shape, generator=gen) * 2)
        if D is not None:
            D.out_c.weight.copy_(torch.randn(D.out_c.weight.shape, generator=gen))
    G.mapping_net.label_lambda.fill_(lam)


def tiny_labelled_dataset(n: int = 12, size: int = 16) -> ImageDataset:
    imgs = np.random.RandomState(0).randint(0, 255, (n, size, size, 3), dtype=np.uint8)
    items = [{"group": i % 3, "style": i % 2} for i in range(n)]
    return ImageDataset(imgs, name="tiny-labelled", license="CC0", labels={"group": list(GROUPS), "style": list(STYLES)},
                        items=items)


def test_config_round_trip_and_validation():
    cfg = labelled_cfg()
    assert cfg.c_dim == 5 and ModelConfig().c_dim == 0
    back = from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg))))  # lists in JSON -> tuples again
    assert back == cfg and to_dict(back) == to_dict(cfg)
    with pytest.raises(ValueError, match="one list of class names"):
        ModelConfig(labels=("group",), label_names=())
    with pytest.raises(ValueError, match="distinct"):
        ModelConfig(labels=("a", "a"), label_names=(("x",), ("y",)))


def test_unconditional_model_has_no_label_weights():
    G, D = Generator(tiny_model_cfg()), Discriminator(tiny_model_cfg())
    assert not any("label" in k or "embed" in k or "w_avg_c" in k for k in G.state_dict())
    assert not any(k.startswith(("c_", "out_c")) for k in D.state_dict())
    with pytest.raises(AssertionError, match="no labels"):
        G.mapping(torch.randn(2, G.z_dim), c=torch.zeros(2, 3))
    with pytest.raises(AssertionError, match="no labels"):
        D(torch.zeros(2, 3, 16, 16), c=torch.zeros(2, 3))


def test_shapes_and_shape_asserts():
    cfg = labelled_cfg()
    G, D = Generator(cfg).eval(), Discriminator(cfg)
    z = torch.randn(4, cfg.z_dim)
    c = labels_to_c(cfg, torch.tensor([[0, 1], [2, 0], [-1, 1], [1, -1]]))
    assert c.shape == (4, 5)
    assert torch.allclose(c[2], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 1]))  # -1: a blend of the whole kind
    ws = G.mapping(z, c=c, psi=0.7)
    assert ws.shape == (4, G.num_ws, cfg.w_dim)
    img = G.synthesis(ws)
    assert img.shape == (4, 3, 16, 16)
    assert D(img, c).shape == (4, 1) and D(img).shape == (4, 1)
    u, p = D.logits(img, c)
    assert u.shape == (4, 1) and p.shape == (4, 1)
    with pytest.raises(AssertionError, match=r"expected c \(4, 5\)"):
        G.mapping(z, c=c[:, :4])
    with pytest.raises(AssertionError, match=r"expected c \(4, 5\)"):
        D(img, c[:3])
    with pytest.raises(ValueError, match="out of range"):
        labels_to_c(cfg, torch.tensor([[3, 0]]))
    space = LabelSpace.of(cfg)  # names -> rows, as the app and the CLI ask for them
    assert space.resolve(style="twemoji") == ({1: 1}, {})
    with pytest.raises(ValueError, match=r"a group \(Smileys, Food, Flags\)"):
        space.resolve("Animals")


def test_lambda_zero_and_zero_projections_are_the_unconditional_model():
    """A fresh labelled G/D computes exactly what an unconditional one with the same weights computes; so does a
    trained-looking one at lambda = 0 (G) -- the transitional starting point."""
    cfg = labelled_cfg()
    torch.manual_seed(0)
    G, D = Generator(cfg).eval(), Discriminator(cfg)
    G0, D0 = Generator(tiny_model_cfg()).eval(), Discriminator(tiny_model_cfg())
    G0.load_state_dict(G.state_dict(), strict=False)
    D0.load_state_dict(D.state_dict(), strict=False)
    G.mapping(torch.randn(64, cfg.z_dim), update_w_avg=True)
    G0.mapping_net.w_avg.copy_(G.mapping_net.w_avg)
    G.mapping_net.w_avg_c.copy_(G.mapping_net.w_avg.expand(6, -1))  # 3 groups x 2 styles
    z = torch.randn(4, cfg.z_dim)
    c = labels_to_c(cfg, torch.tensor([[0, 1], [2, 0], [1, 1], [0, 0]]))
    img0 = G0(z, psi=0.7)
    assert G.label_lambda == 0.0
    assert torch.equal(G(z, psi=0.7), img0) and torch.equal(G(z, psi=0.7, c=c), img0)
    assert torch.equal(D(img0, c), D0(img0)) and torch.equal(D(img0), D0(img0))
    assert torch.equal(D.logits(img0, c)[1], torch.zeros(4, 1))
    make_trained_like(G, D, lam=0.0)
    assert torch.equal(G.mapping(z, c=c), G0.mapping(z))  # lambda 0: the label term is off, whatever its weights
    assert not torch.equal(D(img0, c), D0(img0))  # D's head is live (the loss weighs it by lambda)
    assert torch.equal(D(img0), D0(img0))  # the unconditional logit never depends on the head


def test_conditional_sampling_changes_with_c():
    cfg = labelled_cfg()
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    make_trained_like(G)
    z = torch.randn(1, cfg.z_dim).repeat(3, 1)  # one z, three labels
    c = labels_to_c(cfg, torch.tensor([[0, 0], [1, 0], [1, 1]]))
    ws = G.mapping(z, c=c)
    assert not torch.allclose(ws[0], ws[1]) and not torch.allclose(ws[1], ws[2])
    img = G.synthesis(ws)
    assert (img[0] - img[1]).abs().max() > 1e-3
    assert not torch.allclose(G.mapping(z[:1]), ws[:1])  # c = None is the unconditional path
    G.mapping_net.label_lambda.fill_(0.5)
    half = G.mapping(z, c=c)
    assert not torch.allclose(half, ws) and not torch.allclose(half, G.mapping(z))


def test_per_class_w_avg_truncation_pulls_to_the_class_centre():
    cfg = labelled_cfg()
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    make_trained_like(G)
    G.mapping_net.w_avg.copy_(G.mapping(torch.randn(4096, cfg.z_dim))[:, 0].mean(0))  # a settled w_avg
    G.mapping_net.w_avg_c.copy_(estimate_class_w_avg(G, n=128))
    z = torch.randn(6, cfg.z_dim)
    c = labels_to_c(cfg, torch.tensor([[2, 1]] * 6))
    ws = G.mapping(z, c=c, psi=0.0)
    centre = G.mapping_net.class_centre(c[:1])[0]
    assert torch.allclose(ws, centre.expand_as(ws))
    # the class centre is near the mean w of that class, and not the unconditional w_avg
    mean_w = G.mapping(torch.randn(2048, cfg.z_dim), c=labels_to_c(cfg, torch.tensor([[2, 1]] * 2048)))[:, 0].mean(0)
    assert (centre - mean_w).norm() < 0.2 * (G.w_avg - mean_w).norm()
    # the running per-class update moves only the classes in the batch
    before = G.mapping_net.w_avg_c.clone()
    G.mapping(torch.randn(8, cfg.z_dim), c=labels_to_c(cfg, torch.tensor([[0, 0]] * 8)), update_w_avg=True)
    changed = (G.mapping_net.w_avg_c != before).any(dim=1)  # (3 groups x 2 styles,), first kind slowest
    assert changed.tolist() == [True, False, False, False, False, False]
    # a blended label's centre is the blend of its combinations' centres
    any_style = labels_to_c(cfg, torch.tensor([[1, -1]]))
    both = G.mapping_net.w_avg_c[2:4].mean(0)
    assert torch.allclose(G.mapping_net.class_centre(any_style)[0], both, atol=1e-6)


def test_old_unconditional_checkpoint_loads_and_renders_as_before(tmp_path):
    path = tiny_checkpoint(tmp_path / "old.safetensors")
    doc = read_metadata(path)
    assert "labels" in doc["model"]  # written by this code; remove the new keys to look like an old file
    from safetensors.torch import load_file, save_file

    for k in ("labels", "label_names"):
        doc["model"].pop(k)
    save_file(load_file(str(path)), str(path), metadata={"gan_studio": json.dumps(doc)})
    ck = load_checkpoint(path, need_d=True)
    assert ck.model_cfg.labels == () and ck.G_ema.c_dim == 0
    z = torch.randn(2, ck.model_cfg.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(ck.G_ema(z, psi=0.7)).all()


def test_add_labels_surgery_preserves_images_and_scores(tmp_path):
    from tools.add_labels import add_labels

    path = tiny_checkpoint(tmp_path / "m.safetensors")
    cfg = tiny_model_cfg()
    before = load_checkpoint(path, need_d=True)
    ds = tiny_labelled_dataset()
    rec = add_labels(path, ["group", "style"], ds, w_avg_samples=32)
    after = load_checkpoint(path, need_d=True)
    assert after.model_cfg.labels == ("group", "style") and after.model_cfg.label_names == (GROUPS, STYLES)
    assert rec["classes"] == [3, 2] and path.with_name("m.before_labels.safetensors").exists()
    assert after.meta["surgery"][-1]["op"] == "add_labels"
    z = torch.randn(5, cfg.z_dim, generator=torch.Generator().manual_seed(7))
    c = labels_to_c(after.model_cfg, torch.tensor([[0, 0], [1, 1], [2, 0], [2, 1], [0, 1]]))
    for psi in (1.0, 0.5):
        img = before.G_ema(z, psi=psi)
        assert torch.equal(after.G_ema(z, psi=psi), img) and torch.equal(after.G_ema(z, psi=psi, c=c), img)
        assert torch.equal(after.D(img, c), before.D(img)) and torch.equal(after.D(img), before.D(img))
    # per-class w_avg (3 groups x 2 styles): exactly w_avg while the label term is zero
    assert torch.equal(after.G_ema.mapping_net.w_avg_c, after.G_ema.w_avg.expand(6, -1))
    # once the label term is live, sampling depends on c
    make_trained_like(after.G_ema)
    assert not torch.allclose(after.G_ema(z, c=c), before.G_ema(z))
    # a second surgery is refused, and the file is left alone
    with pytest.raises(ValueError, match="already has labels"):
        add_labels(path, ["group"], ds)
    with pytest.raises(ValueError, match="has no \\['subgroup'\\] labels"):
        add_labels(path.with_name("m.before_labels.safetensors"), ["subgroup"], ds)


def test_add_labels_run_state_keeps_optimizer_and_updates_card(tmp_path):
    from tools.add_labels import add_labels

    cfg = tiny_model_cfg()
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    opt = {"opt_G.mapping_net.layers.0.weight.exp_avg": torch.ones(cfg.w_dim, cfg.z_dim),
           "opt_G.mapping_net.layers.0.weight.exp_avg_sq": torch.ones(cfg.w_dim, cfg.z_dim),
           "opt_G.mapping_net.layers.0.weight.step": torch.tensor(3.0)}
    path = save_checkpoint(tmp_path / "state.safetensors", cfg, G, G=G, D=D, meta={"nimg": 1000}, extra=opt,
                           dtype=torch.float16, write_card=True)
    add_labels(path, ["style"], tiny_labelled_dataset(), backup=False, w_avg_samples=16)
    ck = load_checkpoint(path, need_d=True)
    assert ck.G is not None and ck.G.c_dim == 2 and ck.D.c_dim == 2
    assert torch.equal(ck.extra["opt_G.mapping_net.layers.0.weight.step"], torch.tensor(3.0))
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["surgery"][-1]["at_nimg"] == 1000 and card["model"]["labels"] == ["style"]
    assert not path.with_name("state.before_labels.safetensors").exists()


# ---- the transitional loss and training (Shahbazi et al. 2022) ---------------------------------------------------


def _loss_pair(lam: float):
    """A conditional G/D made from an unconditional pair by surgery-like zero projections, and the unconditional pair."""
    from gan.loss import StyleGAN2Loss

    torch.manual_seed(0)
    ucfg, ccfg = tiny_model_cfg(), labelled_cfg()
    G0, D0 = Generator(ucfg), Discriminator(ucfg)
    G1, D1 = Generator(ccfg), Discriminator(ccfg)
    G1.load_state_dict(G0.state_dict(), strict=False)
    D1.load_state_dict(D0.state_dict(), strict=False)
    G1.mapping_net.label_lambda.fill_(lam)
    def ident(x):
        return x

    return StyleGAN2Loss(G0, D0, ident, 1.0, 4), StyleGAN2Loss(G1, D1, ident, 1.0, 4), ccfg


@pytest.mark.parametrize("phase", ["Dboth", "Gmain"])
def test_transitional_loss_at_lambda_zero_is_the_unconditional_loss(phase):
    """lambda = 0 with zero projections: the same losses and the same gradients as the unconditional model."""
    unc, cond, ccfg = _loss_pair(0.0)
    gen = torch.Generator().manual_seed(3)
    real = torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1
    z = torch.randn(4, ccfg.z_dim, generator=gen)
    c = labels_to_c(ccfg, torch.tensor([[0, 0], [1, 1], [2, 0], [1, 0]]))
    nets = (unc.G, unc.D, cond.G, cond.D)
    for m in nets:
        m.requires_grad_(True)
    torch.manual_seed(5)
    a = unc.accumulate_gradients(phase, real, z)
    torch.manual_seed(5)
    b = cond.accumulate_gradients(phase, real, z, c_real=c, c_gen=c)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    net0, net1 = (unc.G, cond.G) if phase == "Gmain" else (unc.D, cond.D)
    g1 = dict(net1.named_parameters())
    for name, p in net0.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, g1[name].grad, atol=1e-5), name


def test_transitional_loss_uses_labels_once_lambda_is_on():
    _, cond, ccfg = _loss_pair(1.0)
    make_trained_like(cond.G, cond.D)
    gen = torch.Generator().manual_seed(3)
    real = torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1
    z = torch.randn(4, ccfg.z_dim, generator=gen)
    c_a = labels_to_c(ccfg, torch.tensor([[0, 0]] * 4))
    c_b = labels_to_c(ccfg, torch.tensor([[2, 1]] * 4))
    torch.manual_seed(5)
    la = cond.accumulate_gradients("Dmain", real, z, c_real=c_a, c_gen=c_a)["loss_D"]
    torch.manual_seed(5)
    lb = cond.accumulate_gradients("Dmain", real, z, c_real=c_b, c_gen=c_b)["loss_D"]
    assert not torch.allclose(la, lb)
    with pytest.raises(ValueError, match="needs labels for its fakes"):
        cond.accumulate_gradients("Gmain", real, z)


def test_conditional_training_ramps_lambda_and_learns_label_weights():
    from gan.training import TrainState
    from tests.conftest import tiny_train_cfg

    ds = tiny_labelled_dataset(n=24)
    st = TrainState(labelled_cfg(), tiny_train_cfg(batch=8, steps=4, label_ramp_nimg=32))
    proj0 = st.G.mapping_net.label_proj.weight.clone()
    lams = []
    for _ in range(4):
        st.train_step(ds)
        lams.append(round(float(st.G_ema.mapping_net.label_lambda), 4))
    assert lams == [0.25, 0.5, 0.75, 1.0]  # batch 8 / ramp 32 per step, then held at 1
    st.train_step(ds)
    assert float(st.G.mapping_net.label_lambda) == 1.0
    assert not torch.equal(st.G.mapping_net.label_proj.weight, proj0)  # the label projection trains
    stats, _ = st.read_stats()
    assert all(np.isfinite(v) for v in stats.values())
    assert st.sample_grid().shape == (16, 64, 3)  # 4 grid seeds in a row, each drawn with its own labels


def test_the_label_term_grows_within_steps_not_epochs():
    """The zero-initialised label projection learns at the full learning rate: 20 steps of a tiny model already move
    w by a sizeable fraction of its spread (at the mapping's 0.01 multiplier it stayed ~1 % after 32k images)."""
    from gan.training import TrainState
    from tests.conftest import tiny_train_cfg

    ds = tiny_labelled_dataset(n=24)
    st = TrainState(labelled_cfg(), tiny_train_cfg(batch=8, steps=20, label_ramp_nimg=8))
    for _ in range(20):
        st.train_step(ds)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, st.G.z_dim, generator=gen)
    c = labels_to_c(st.G.cfg, torch.stack([torch.randint(3, (64,), generator=gen), torch.randint(2, (64,), generator=gen)], 1))
    w0, w1 = st.G.mapping(z)[:, 0], st.G.mapping(z, c=c)[:, 0]  # (64, w_dim) each
    assert (w1 - w0).norm(dim=1).mean() > 0.05 * w0.std(dim=0).norm()


def test_freeze_mapping_keeps_label_weights_trainable_and_unlabelled_sets_train():
    """Fine-tuning a conditional model on a user's (unlabelled) images: the mapping is frozen but the label parts
    train, fakes are drawn for every class, and D scores without labels."""
    from gan.training import TrainState
    from tests.conftest import make_discs, tiny_train_cfg

    st = TrainState(labelled_cfg(), tiny_train_cfg(batch=4, steps=2, freeze_mapping=True, label_ramp_nimg=4))
    names = {id(p): n for n, p in st.G.named_parameters()}
    trained = {names[id(p)] for p in st.g_params}
    assert "mapping_net.label_proj.weight" in trained and "mapping_net.embed.weight" in trained
    assert not any(n.startswith("mapping_net.layers.") for n in trained)
    ds = make_discs(8)  # no labels
    st.train_step(ds)
    st.train_step(ds)
    assert all(np.isfinite(v) for v in st.read_stats()[0].values())


def test_dataset_labels_match_by_name_not_position():
    from gan.labels import dataset_label_rows

    cfg = labelled_cfg()
    ds = tiny_labelled_dataset()
    shuffled = ImageDataset(ds.images, ds.name, ds.license, {"group": list(reversed(GROUPS)), "style": list(STYLES)},
                            [{"group": 2 - it["group"], "style": it["style"]} for it in ds.items])
    assert np.array_equal(dataset_label_rows(cfg, ds), dataset_label_rows(cfg, shuffled))
    odd = ImageDataset(ds.images, ds.name, ds.license, {"group": ["Smileys", "Food", "Aliens"], "style": list(STYLES)}, ds.items)
    with pytest.raises(ValueError, match="does not know: Aliens"):
        dataset_label_rows(cfg, odd)


def test_balanced_draws_see_each_class_equally_often_and_fakes_follow():
    from gan.labels import dataset_c, dataset_label_rows
    from gan.training import TrainState
    from tests.conftest import tiny_train_cfg

    # A lopsided set: 12 Smileys, 3 Food, 1 Flags (75 % / 19 % / 6 %).
    rows = [0] * 12 + [1] * 3 + [2]
    ds = tiny_labelled_dataset(n=16)
    ds = ImageDataset(ds.images, ds.name, ds.license, ds.labels, [{"group": g, "style": 0} for g in rows])
    seen = {}
    for balance in (None, "group"):
        st = TrainState(labelled_cfg(), tiny_train_cfg(batch=64, balance_by=balance))
        group_of = {tuple(c.tolist()): g for c, g in zip(dataset_c(st.model_cfg, ds), dataset_label_rows(st.model_cfg, ds)[:, 0])}
        real = np.concatenate([st.batches.real_batch(ds)[1].numpy() for _ in range(40)])  # (2560, c_dim)
        fake = np.concatenate([st.batches.gen_labels(ds).numpy() for _ in range(40)])
        seen[balance] = [np.bincount([group_of[tuple(c)] for c in x], minlength=3) / len(x) for x in (real, fake)]
    for share in seen[None]:  # every image equally often: the data's mix
        assert np.allclose(share, [12 / 16, 3 / 16, 1 / 16], atol=0.03)
    for share in seen["group"]:  # every group equally often, for the real images and the fakes' labels alike
        assert np.allclose(share, [1 / 3] * 3, atol=0.03)
    halfway = ds.class_weights("group", power=0.5)  # (N,)
    assert np.isclose(halfway.sum(), 1.0) and halfway[15] > halfway[12] > halfway[0]
    with pytest.raises(ValueError, match="cannot balance the classes of 'subgroup'"):
        ds.class_weights("subgroup")
    with pytest.raises(ValueError, match="balance power must be within"):
        ds.class_weights("group", power=2.0)


def test_label_space_resolves_categories_groups_and_styles():
    from gan.labels import LabelSpace, labels_for_seed

    cfg = dataclasses.replace(tiny_model_cfg(), labels=("subgroup", "style"),
                              label_names=(("face-smiling", "food-fruit", "food-sweet", "flag"), STYLES))
    meta = {"label_info": {"group_of": {"face-smiling": "Smileys", "food-fruit": "Food", "food-sweet": "Food", "flag": "Flags"},
                           "counts": {"subgroup": {"face-smiling": 40, "food-fruit": 7, "food-sweet": 5, "flag": 9}}}}
    space = LabelSpace.of(cfg, meta)
    values = [v for _, v in space.category_choices()]
    assert values[:4] == ["any", "Smileys", "Food", "Flags"] and "food-sweet" in values
    assert "Food (2 kinds, 12 images)" in [s for s, _ in space.category_choices()]
    # a group draws only its own subgroups, a subgroup and a style are fixed
    for seed in range(20):
        assert space.describe(seed, "Food").split(", ")[0] in ("food-fruit", "food-sweet")
        assert space.describe(seed, "flag", "twemoji") == "flag, twemoji"
    # "any" draws every class about equally often, independent of the data's mix
    rows = np.array([labels_for_seed(cfg.label_names, s) for s in range(4000)])
    assert np.bincount(rows[:, 0], minlength=4).min() > 900
    assert labels_for_seed(cfg.label_names, 7) == labels_for_seed(cfg.label_names, 7)
    with pytest.raises(ValueError, match="unknown category 'pizza'"):
        space.resolve("pizza")
    with pytest.raises(ValueError, match="unknown style 'emoji-one'"):
        space.resolve("any", "emoji-one")
    with pytest.raises(ValueError, match="unconditional"):
        LabelSpace.of(tiny_model_cfg()).resolve("Food")
    assert LabelSpace.of(tiny_model_cfg()).c_for_seeds([1, 2]) is None
    c = space.c_for_seeds([1, 2, 3], "food-fruit", "noto")
    assert c.shape == (3, 6) and torch.equal(c[:, 1], torch.ones(3)) and torch.equal(c[:, 4], torch.ones(3))


def test_finetuning_a_conditional_model_in_the_app_keeps_its_pickers(tmp_path):
    """studio.finetune on a conditional model and unlabelled images: the run trains, and the tuned model still has
    its categories (with the parent's counts), so Explore's pickers keep working on it."""
    import threading

    from studio.finetune import run_finetune
    from studio.models import load_model
    from tests.conftest import make_discs, tiny_conditional_checkpoint

    base = load_model(tiny_conditional_checkpoint(tmp_path / "c.safetensors"), "cond")
    from gan.config import TrainConfig

    cfg = TrainConfig.finetune_defaults(8, steps=3, sample_every=0, checkpoint_every=0)
    last = None
    for up in run_finetune(base, make_discs(8), cfg, threading.Event(), tmp_path / "ft", torch.device("cpu")):
        last = up
    assert last is not None and last.model is not None
    tuned = last.model
    assert tuned.labels.conditional and tuned.labels.counts["subgroup"]["food-fruit"] == 7
    assert "Food & Drink" in [v for _, v in tuned.labels.category_choices()]


# ---- parents: each subgroup's embedding is its own plus its group's (tools.add_parents) ----

SUBGROUPS = ("face-smiling", "face-sad", "fruit", "flag")
PARENTS = ("Smileys", "Smileys", "Food", "Flags")


def subgroup_cfg(**kw) -> ModelConfig:
    return dataclasses.replace(tiny_model_cfg(), labels=("subgroup", "style"), label_names=(SUBGROUPS, STYLES), **kw)


def test_parents_config_validation_and_embedding_inputs():
    cfg = subgroup_cfg(label_parents=PARENTS)
    assert cfg.parent_names == ("Smileys", "Food", "Flags") and from_dict(ModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="one parent per class of the first label kind"):
        subgroup_cfg(label_parents=PARENTS[:3])
    with pytest.raises(ValueError, match="one parent per class"):
        dataclasses.replace(tiny_model_cfg(), label_parents=("a",))
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.mapping_net.embed.weight.shape[1] == cfg.c_dim + 3 and D.c_embed.weight.shape[1] == cfg.c_dim + 3
    c = labels_to_c(cfg, torch.tensor([[0, 1], [1, 0], [3, 1]]))  # (3, c_dim)
    ext = G.mapping_net.embed.with_parents(c)  # (3, c_dim + 3)
    assert torch.equal(D.c_embed.with_parents(c), ext)  # G and D give their embeddings the same input
    assert ext.shape == (3, cfg.c_dim + 3) and torch.equal(ext[:, : cfg.c_dim], c)
    assert ext[:, cfg.c_dim:].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]  # both faces share Smileys, flag -> Flags


def test_add_parents_surgery_preserves_images_and_scores_and_the_parent_learns_from_every_child(tmp_path):
    from tools.add_parents import add_parents

    cfg = subgroup_cfg()
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    make_trained_like(G, D)
    G.mapping(torch.randn(256, cfg.z_dim), c=labels_to_c(cfg, torch.tensor([[i % 4, i % 2] for i in range(256)])),
              update_w_avg=True)
    opt = {"opt_G.mapping_net.embed.weight.exp_avg": torch.ones(cfg.w_dim, cfg.c_dim),
           "opt_G.mapping_net.embed.weight.exp_avg_sq": torch.full((cfg.w_dim, cfg.c_dim), 4.0)}
    meta = {"nimg": 500, "label_info": {"group_of": dict(zip(SUBGROUPS, PARENTS))}}
    path = save_checkpoint(tmp_path / "state.safetensors", cfg, G, G=copy.deepcopy(G), D=D, meta=meta, extra=opt)
    before = load_checkpoint(path, need_d=True)
    rec = add_parents(path)
    after = load_checkpoint(path, need_d=True)
    assert rec["parents"] == ["Smileys", "Food", "Flags"] and rec["embedding_inputs"] == [6, 9]
    assert after.model_cfg.label_parents == PARENTS and path.with_name("state.before_parents.safetensors").exists()
    z = torch.randn(4, cfg.z_dim, generator=torch.Generator().manual_seed(3))
    c = labels_to_c(cfg, torch.tensor([[0, 0], [1, 1], [2, 0], [3, 1]]))
    for psi in (1.0, 0.7):
        assert torch.allclose(after.G_ema(z, c=c, psi=psi), before.G_ema(z, c=c, psi=psi), atol=1e-5)
    img = before.G_ema(z, c=c)
    assert torch.allclose(after.D(img, c), before.D(img, c), atol=1e-5)
    # Adam's moments follow the wider weight: old entries rescaled (6 -> 9 inputs), new first moments zero
    m, v = after.extra["opt_G.mapping_net.embed.weight.exp_avg"], after.extra["opt_G.mapping_net.embed.weight.exp_avg_sq"]
    assert m.shape == (cfg.w_dim, 9) and torch.allclose(m[:, :6], torch.full_like(m[:, :6], (6 / 9) ** 0.5))
    assert (m[:, 6:] == 0).all() and torch.allclose(v, torch.full_like(v, 4.0 * 6 / 9))
    with pytest.raises(ValueError, match="already ties"):
        add_parents(path)
    # A gradient through either face subgroup reaches the shared Smileys column, never the Food or Flags ones.
    G2 = after.G
    faces = labels_to_c(after.model_cfg, torch.tensor([[0, 0], [1, 1]]))
    G2.mapping(torch.randn(2, cfg.z_dim), c=faces).square().sum().backward()
    grad = G2.mapping_net.embed.weight.grad[:, cfg.c_dim:]  # (w_dim, 3 parents)
    assert grad[:, 0].abs().sum() > 0 and (grad[:, 1:] == 0).all()


def test_add_parents_refuses_models_without_subgroups_or_groups(tmp_path):
    from tools.add_parents import add_parents

    path = save_checkpoint(tmp_path / "g.safetensors", labelled_cfg(), Generator(labelled_cfg()), meta={"nimg": 0})
    with pytest.raises(ValueError, match="first label kind must be 'subgroup'"):
        add_parents(path)
    path = save_checkpoint(tmp_path / "s.safetensors", subgroup_cfg(), Generator(subgroup_cfg()), meta={"nimg": 0})
    with pytest.raises(ValueError, match="no group known for 4 subgroups"):
        add_parents(path)
    assert not path.with_name("s.before_parents.safetensors").exists()  # nothing was touched


def test_training_with_parents_moves_the_parent_embeddings():
    from gan.training import TrainState
    from tests.conftest import tiny_train_cfg

    imgs = np.random.RandomState(0).randint(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    ds = ImageDataset(imgs, name="tiny-subgroups", license="CC0", labels={"subgroup": list(SUBGROUPS), "style": list(STYLES)},
                      items=[{"subgroup": i % 4, "style": i % 2} for i in range(16)])
    st = TrainState(subgroup_cfg(label_parents=PARENTS), tiny_train_cfg(batch=8, steps=3, label_ramp_nimg=8))
    before = st.G.mapping_net.embed.weight[:, -3:].clone(), st.D.c_embed.weight[:, -3:].clone()  # the parent columns
    for _ in range(3):
        st.train_step(ds)
    assert not torch.equal(st.G.mapping_net.embed.weight[:, -3:], before[0])
    assert not torch.equal(st.D.c_embed.weight[:, -3:], before[1])
    stats, _ = st.read_stats()
    assert all(np.isfinite(v) for v in stats.values())


def test_add_parents_command_updates_the_config_the_run_resumes_with(tmp_path, monkeypatch, capsys):
    from tools import add_parents

    cfg = subgroup_cfg()
    meta = {"nimg": 0, "label_info": {"group_of": dict(zip(SUBGROUPS, PARENTS))}}
    path = save_checkpoint(tmp_path / "m.safetensors", cfg, Generator(cfg), meta=meta)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": to_dict(cfg), "train": {"batch": 8}}))
    monkeypatch.setattr("sys.argv", ["add_parents", str(path), "--config", str(config), "--no-backup"])
    add_parents.main()
    assert "3 parents added" in capsys.readouterr().out
    doc = json.loads(config.read_text())
    assert from_dict(ModelConfig, doc["model"]) == load_checkpoint(path).model_cfg and doc["train"] == {"batch": 8}


def test_add_parents_on_a_float16_checkpoint_keeps_its_images(tmp_path):
    """Shipped checkpoints store float16: the rescaled embedding must not be rounded back to it."""
    from tools.add_parents import add_parents

    cfg = subgroup_cfg()
    torch.manual_seed(1)
    G, D = Generator(cfg), Discriminator(cfg)
    make_trained_like(G, D)
    meta = {"nimg": 0, "label_info": {"group_of": dict(zip(SUBGROUPS, PARENTS))}}
    path = save_checkpoint(tmp_path / "m.safetensors", cfg, G, D=D, meta=meta, dtype=torch.float16, write_card=True)
    before = load_checkpoint(path, need_d=True)
    add_parents(path, backup=False)
    after = load_checkpoint(path, need_d=True)
    z = torch.randn(3, cfg.z_dim, generator=torch.Generator().manual_seed(0))
    c = labels_to_c(cfg, torch.tensor([[0, 0], [2, 1], [3, 0]]))
    assert (after.G_ema(z, c=c) - before.G_ema(z, c=c)).abs().max() < 1e-4
    assert json.loads(path.with_suffix(".json").read_text())["model"]["label_parents"] == list(PARENTS)
