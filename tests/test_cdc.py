"""Cross-domain distance consistency: zero for identical generators, positive once one drifts, and its gradient
pulls the adapted generator's batch layout back towards the source's."""
import copy

import torch

from gan.cdc import distance_consistency_loss, similarity_log_probs, synthesis_features
from gan.networks import Generator
from tests.conftest import tiny_model_cfg


def test_loss_is_zero_for_the_same_generator_and_positive_after_drift():
    torch.manual_seed(0)
    G = Generator(tiny_model_cfg())
    ws = G.mapping(torch.randn(6, G.z_dim))  # (6, num_ws, w_dim)
    blocks = (1, 2)
    img, fs = synthesis_features(G, ws, blocks)
    _, ft = synthesis_features(G, ws, blocks)
    assert img.shape == (6, 3, 16, 16) and len(fs) == 2 and fs[0].shape[0] == 6
    assert distance_consistency_loss(fs, ft).item() < 1e-6
    G2 = copy.deepcopy(G)
    with torch.no_grad():
        for p in G2.synthesis_net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    _, f2 = synthesis_features(G2, ws, blocks)
    assert distance_consistency_loss(fs, f2).item() > 1e-4
    lp = similarity_log_probs(fs[0])
    assert lp.shape == (6, 5) and torch.allclose(lp.exp().sum(1), torch.ones(6))


def test_a_gradient_step_on_the_loss_restores_the_source_layout():
    torch.manual_seed(1)
    src = Generator(tiny_model_cfg())
    tgt = copy.deepcopy(src)
    with torch.no_grad():
        for p in tgt.synthesis_net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ws = src.mapping(torch.randn(8, src.z_dim)).detach()  # (8, num_ws, w_dim)
    _, fs = synthesis_features(src, ws, (1, 2))
    opt = torch.optim.Adam(tgt.synthesis_net.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        _, ft = synthesis_features(tgt, ws, (1, 2))
        loss = distance_consistency_loss(fs, ft)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_finetuning_with_the_diversity_term_logs_it_and_trains(tmp_path):
    from gan.checkpoint import load_checkpoint
    from gan.config import TrainConfig
    from gan.training import TrainState, train
    from tests.conftest import make_discs, tiny_checkpoint

    ck = load_checkpoint(tiny_checkpoint(tmp_path / "base.safetensors"))
    ds = make_discs(10, size=16)
    cfg = TrainConfig.finetune_defaults(len(ds), steps=3, batch=4, cdc_weight=10.0, sample_every=0, checkpoint_every=0,
                                        grid_seeds=(0, 1))
    state = TrainState(ck.model_cfg, cfg, init=ck)
    steps = [ev for ev in train(state, ds) if ev.kind == "step"]
    assert len(steps) == 3 and all(ev.losses.get("cdc", -1) > -1e-6 for ev in steps)  # KL >= 0, up to rounding
    assert steps[-1].losses["cdc"] > 0  # G has moved away from the source, so the term is live
    assert state.loss.source_G is not None and not any(p.requires_grad for p in state.loss.source_G.parameters())
