"""Cross-domain distance consistency (Ojha et al., "Few-shot Image Generation via Cross-domain Correspondence",
CVPR 2021): keep a fine-tuned generator's samples as different from each other as the source generator's are.

For one batch of latents, each sample's similarities to the other samples (cosine, in the synthesis features of a
few blocks) form a probability distribution (softmax over the others). The loss is the KL divergence from the
source generator's distributions to the adapted one's, summed over blocks and averaged over samples. It pulls the
relative layout of the batch back to the source's, so a tiny target set cannot collapse many latents onto a few
look-alike images, while leaving the style free to move.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gan.networks import Generator


def synthesis_features(G: Generator, ws: torch.Tensor, blocks: tuple[int, ...], noise_mode: str = "const"
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Render ws (B, num_ws, w_dim) and return (img (B, 3, R, R), features of the chosen synthesis blocks)."""
    feats: list[torch.Tensor] = []
    hooks = [G.synthesis_net.blocks[i].register_forward_hook(lambda m, inp, out: feats.append(out[0])) for i in blocks]
    try:
        img = G.synthesis(ws, noise_mode=noise_mode)
    finally:
        for h in hooks:
            h.remove()
    return img, feats


def similarity_log_probs(feat: torch.Tensor) -> torch.Tensor:
    """feat (B, C, H, W) -> (B, B-1) log-softmax over each sample's cosine similarities to the other samples."""
    B = feat.shape[0]
    assert B >= 3, f"distance consistency needs a batch of at least 3, got {B}"
    f = F.normalize(feat.flatten(1).float(), dim=1)  # (B, C*H*W), unit rows
    sim = f @ f.t()  # (B, B) cosine similarities
    off = ~torch.eye(B, dtype=torch.bool, device=feat.device)
    return F.log_softmax(sim[off].view(B, B - 1), dim=1)  # (B, B-1)


def distance_consistency_loss(source_feats: list[torch.Tensor], target_feats: list[torch.Tensor]) -> torch.Tensor:
    """sum over blocks of mean_i KL(p_source(i) || p_target(i)); gradients flow into the target features only."""
    assert len(source_feats) == len(target_feats) and source_feats, "one source and one target feature per block"
    loss = target_feats[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(source_feats, target_feats):
        log_ps = similarity_log_probs(fs.detach())
        log_pt = similarity_log_probs(ft)
        loss = loss + F.kl_div(log_pt, log_ps, log_target=True, reduction="batchmean")
    return loss
