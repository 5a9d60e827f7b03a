import numpy as np
import pytest
import torch

from gan.metrics import (
    FeatureSet,
    frechet_distance,
    frechet_distance_from_stats,
    inside_manifold,
    kid_score,
    precision_recall,
)


def fs(x: torch.Tensor) -> FeatureSet:
    s = FeatureSet()
    for chunk in x.split(100):  # streamed in batches
        s.add(chunk)
    return s


def gauss(n, d, seed, scale=1.0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def test_fd_of_a_set_with_itself_is_zero():
    x = gauss(2000, 16, 0)
    assert abs(frechet_distance(fs(x), fs(x))) < 1e-6


def test_fd_closed_form_from_stats():
    d = 8
    mu1, mu2 = torch.zeros(d), torch.full((d,), 0.5)
    s1, s2 = torch.eye(d), 4 * torch.eye(d)
    # |mu1-mu2|^2 + tr(I + 4I - 2*sqrt(4I)) = 8*0.25 + 8*(1 + 4 - 4)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(2.0 + 8.0, abs=1e-9)


def test_fd_grows_with_a_known_shift():
    x = gauss(20000, 4, 0)
    fds = [frechet_distance(fs(x), fs(gauss(20000, 4, 1, shift=s))) for s in (0.0, 0.5, 1.0)]
    assert fds[0] < 0.01
    assert fds[1] == pytest.approx(4 * 0.25, abs=0.05)  # |shift|^2 summed over 4 dims
    assert fds[2] == pytest.approx(4 * 1.0, abs=0.08)


def test_kid_unbiased_on_small_sets_and_positive_for_different_sets():
    # n = 10 per side: each estimate is noisy, but their mean is ~0 (unbiased) and none blows up negatively
    same = [kid_score(gauss(10, 8, s), gauss(10, 8, s + 1000), num_subsets=1)[0] for s in range(300)]
    diff, _ = kid_score(gauss(200, 8, 0), gauss(200, 8, 1, shift=1.0))
    assert abs(np.mean(same)) < 0.1, np.mean(same)
    assert min(same) > -0.15 * diff
    assert diff > 5
    with pytest.raises(ValueError):
        kid_score(gauss(1, 8, 0), gauss(5, 8, 1))


def test_precision_recall_identical_and_disjoint():
    x = gauss(300, 8, 0)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    p, r = precision_recall(x, gauss(300, 8, 1, shift=100.0))
    assert p == 0.0 and r == 0.0
    # a collapsed generator: precise but with poor recall
    collapsed = gauss(300, 8, 2, scale=0.05)
    p, r = precision_recall(x, collapsed)
    assert p > 0.9 and r < 0.2


def test_inside_manifold_marks_each_query():
    ref = gauss(300, 8, 0)
    near, far = ref[:5] + 1e-3, gauss(5, 8, 1, shift=100.0)
    inside = inside_manifold(ref, torch.cat([near, far]))  # (10,)
    assert inside.dtype == torch.bool and inside.tolist() == [True] * 5 + [False] * 5
    with pytest.raises(ValueError, match="k=3"):
        inside_manifold(ref[:3], near)


def test_feature_net_trains_and_evaluate_reports_model_and_floor(tmp_path, monkeypatch):
    from gan.checkpoint import CheckpointError
    from gan.evaluate import evaluate
    from gan.features import load_feature_net, save_feature_net, train_feature_net
    from gan.networks import Generator
    from tests.conftest import make_discs, tiny_model_cfg

    ds = make_discs(96, size=16)
    # label: is the disc dark or bright (group), and which colour channel dominates (subgroup)
    mean = ds.images.reshape(96, -1, 3).min(1)
    ds.labels = {"group": ["dark", "bright"], "subgroup": ["r", "g", "b"]}
    ds.items = [{"group": int(m.sum() > 300), "subgroup": int(m.argmax())} for m in mean]
    net, card = train_feature_net(ds, epochs=2, batch=16, log=lambda s: None)
    assert 0 <= card["group_acc"] <= 1 and card["heldout_images"] == 10
    path = save_feature_net(net, tmp_path / "f.safetensors", card)
    back = load_feature_net(path)
    x = ds.to_tensor(torch.arange(4))
    assert back.features(x).shape == (4, 256) and torch.allclose(back.features(x), net.features(x), atol=1e-5)
    with pytest.raises(CheckpointError):
        from gan.checkpoint import save_checkpoint

        load_feature_net(save_checkpoint(tmp_path / "g.safetensors", tiny_model_cfg(16), Generator(tiny_model_cfg(16))))

    import gan.evaluate as ev

    monkeypatch.setattr(ev, "DEFAULT_FEATURES", path)
    torch.manual_seed(0)
    res = evaluate(Generator(tiny_model_cfg(16)).eval(), ds, n=64, kid_subset=32)
    assert set(res["model"]) >= {"fd", "kid", "precision", "recall"}
    # an untrained generator is far worse than two halves of the same data
    assert res["model"]["fd"] > res["real_vs_real"]["fd"]
    assert res["model"]["kid"] > res["real_vs_real"]["kid"]
    rec = res["recognised"]  # the classifier's held-out 10 % of this dataset is the real reference
    assert rec["real_images"] == "held-out" and rec["n_real"] == 10 and rec["n_fake"] == 64 and rec["psi"] == 0.7
    assert 0.0 <= rec["model"] <= 1.0 and 0.0 <= rec["real"] <= 1.0
    # real features embedded once by the caller give the same figures; a set for another dataset is refused
    real = ev.dataset_features(ev.feature_extractor("emoji"), ds)
    torch.manual_seed(0)
    again = evaluate(Generator(tiny_model_cfg(16)).eval(), ds, n=64, kid_subset=32, real=real)
    for part in ("model", "real_vs_real"):
        for k in ("fd", "precision", "recall"):
            assert again[part][k] == pytest.approx(res[part][k], rel=1e-4, abs=1e-6), (part, k)
    with pytest.raises(ValueError, match="96 images"):
        evaluate(Generator(tiny_model_cfg(16)).eval(), ds, n=64, real=ev.dataset_features(ev.feature_extractor("emoji"), ds, np.arange(10)))


@torch.no_grad()
def test_recognised_share_counts_samples_the_classifier_is_sure_of():
    from gan.evaluate import recognised_share, subgroup_confidence
    from gan.features import EmojiFeatureNet
    from gan.networks import Generator
    from tests.conftest import make_discs, tiny_model_cfg

    ds, G = make_discs(12, size=16), Generator(tiny_model_cfg(16)).eval()
    net = EmojiFeatureNet(num_groups=2, num_subgroups=4).eval()
    net.subgroup_head.weight.zero_()
    net.subgroup_head.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))  # p = e^5 / (e^5 + 3) = 0.98 for every image
    conf = subgroup_confidence(net, ds.to_tensor(torch.arange(3)))
    assert conf.shape == (3,) and torch.allclose(conf, torch.full((3,), 0.98), atol=0.005)
    sure = recognised_share(G, ds, n=8, net=net)
    assert sure["model"] == 1.0 and sure["real"] == 1.0 and sure["real_images"] == "all" and sure["n_real"] == 12
    assert recognised_share(G, ds, n=8, net=net, threshold=0.99)["model"] == 0.0
    net.subgroup_head.bias.zero_()  # p = 1/4 for every image: nothing is recognised
    unsure = recognised_share(G, ds, n=8, net=net)
    assert unsure["model"] == 0.0 and unsure["real"] == 0.0
    with pytest.raises(AssertionError, match="expected"):
        subgroup_confidence(net, torch.zeros(2, 1, 16, 16))


def test_generator_features_use_the_requested_noise_mode():
    from gan.evaluate import generator_features
    from gan.networks import Generator
    from tests.conftest import tiny_model_cfg

    torch.manual_seed(0)
    G = Generator(tiny_model_cfg(16)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(1.0)  # make the noise inputs visible in the output
    extract = lambda img: img.flatten(1)  # noqa: E731 - pixels as features
    none = generator_features(extract, G, 8, noise_mode="none").features
    const = generator_features(extract, G, 8, noise_mode="const").features
    assert none.shape == const.shape == (8, 3 * 16 * 16)
    assert not torch.allclose(none, const)
    assert torch.equal(none, generator_features(extract, G, 8, noise_mode="none").features)  # same seed, same samples


def test_nearest_neighbour_gaps_flag_repeated_samples():
    from gan.evaluate import nearest_neighbour_gaps

    x = gauss(64, 8, 0)
    gaps = nearest_neighbour_gaps(x)
    assert gaps.shape == (64,) and gaps.min() > 0.1
    collapsed = torch.cat([x[:32], x[:32]])  # every sample appears twice
    assert torch.all(nearest_neighbour_gaps(collapsed) == 0)
    with pytest.raises(AssertionError):
        nearest_neighbour_gaps(x[:1])
