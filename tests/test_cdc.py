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
