"""Tie a conditional model's subgroup labels to their Unicode groups without changing what it computes.

    python -m tools.add_parents runs/cond20/T_run/state.safetensors --data data/emoji64x3 --config runs/cond20/arm_T.json
    python -m tools.add_parents checkpoints/emoji64_categories.safetensors

Why: a subgroup-conditional model learns one label embedding per subgroup, from that subgroup's images only. Half
the subgroups have a dozen images or fewer per style, and their embeddings barely move w away from the global mean
(measured on the shipped category model: 'other-object', 'lock', 'sound' sit 3-4 from the mean against a spread of
9 in w, faces and people 12-13), so they draw the generic blob at the centre of W. With parents, each subgroup's
embedding is its own plus its group's (ModelConfig.label_parents; gan.networks.LabelEmbedding), in G's mapping and in
D's projection head, and the group's part learns from every image of the group.

How: the parents are the groups of the first label kind's classes, from the card's `label_info.group_of` or, for a
run state, from the dataset's labels. The label embeddings of G, G_ema and D gain one input per group, with zero
weights, so every embedding, image and score stays the same; the old weights are scaled by sqrt(new_in / old_in)
because equalized learning rate divides by sqrt(fan_in) (and kept in float32, even in a float16 checkpoint). Adam's moments are widened as tools.widen does it (new
first moments zero, new second moments the mean of the old ones). The tool checks on a new file beside the old one
that G_ema draws the same images (with a label, psi 1 and 0.7) and that D scores them the same, records the change
under "surgery" in the metadata, and only then replaces the file atomically, keeping a copy of the original beside
it unless --no-backup. With --config, the training config file the run resumes with gets the same label_parents
(resuming refuses a config whose model differs from the state's).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from gan.checkpoint import Checkpoint, read_metadata, replace_with_surgery
from gan.config import ModelConfig, from_dict, to_dict
from gan.dataset import ImageDataset, load_dataset
from gan.io import atomic_write_text
from gan.networks import labels_to_c

# The label-embedding weights (out, c_dim) that gain parent inputs, by the network prefix that owns them.
EMBEDDINGS = {"G": "mapping_net.embed.weight", "G_ema": "mapping_net.embed.weight", "D": "c_embed.weight"}


def groups_of(doc: dict, cfg: ModelConfig, data: ImageDataset | None) -> tuple[str, ...]:
    """The group of each class of cfg's first label kind (which must be 'subgroup')."""
    names = cfg.label_names[0]
    group_of = dict((doc.get("label_info") or {}).get("group_of") or {})
    if data is not None and "group" in data.labels and "subgroup" in data.labels:
        groups, subgroups = data.labels["group"], data.labels["subgroup"]
        group_of |= {subgroups[s]: groups[g] for s, g in zip(data.label_array("subgroup"), data.label_array("group"))}
    missing = [n for n in names if n not in group_of]
    if missing:
        raise ValueError(f"no group known for {len(missing)} subgroups (e.g. {', '.join(missing[:3])}); give the "
                         f"dataset the model was trained on")
    return tuple(group_of[n] for n in names)


def widen_inputs(w: torch.Tensor, new_in: int) -> torch.Tensor:
    """(out, in) FC weight -> (out, new_in): the old block scaled by sqrt(new_in / in) (equalized lr), zeros after."""
    out = torch.zeros(w.shape[0], new_in, dtype=w.dtype)
    out[:, : w.shape[1]] = w * math.sqrt(new_in / w.shape[1])
    return out


def widen_adam_inputs(m: torch.Tensor, v: torch.Tensor, new_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam moments of a weight widened by widen_inputs: the stored weight's gradient shrinks by sqrt(scale) when the
    gain does, so the old moments are rescaled to match; new first moments are zero, new second moments the mean."""
    scale = new_in / m.shape[1]
    m_new = torch.zeros(m.shape[0], new_in, dtype=m.dtype)
    v_new = torch.full((v.shape[0], new_in), float(v.mean()) / scale, dtype=v.dtype)
    m_new[:, : m.shape[1]] = m / math.sqrt(scale)
    v_new[:, : v.shape[1]] = v / scale
    return m_new, v_new


def add_parents(path: str | Path, data: ImageDataset | None = None, backup: bool = True) -> dict[str, Any]:
    """Rewrite `path` (a conditional checkpoint or run state whose first label kind is 'subgroup') with each
    subgroup's group as its parent. Returns the surgery record written to the metadata."""
    path = Path(path)
    doc = read_metadata(path)
    cfg = from_dict(ModelConfig, doc["model"])
    if not cfg.labels or cfg.labels[0] != "subgroup":
        raise ValueError(f"{path}: the first label kind must be 'subgroup' (labels: {list(cfg.labels) or 'none'})")
    if cfg.label_parents:
        raise ValueError(f"{path} already ties its subgroups to {len(cfg.parent_names)} parents")
    new_cfg = dataclasses.replace(cfg, label_parents=groups_of(doc, cfg, data))
    new_in = new_cfg.c_dim + len(new_cfg.parent_names)

    tensors = load_file(str(path), device="cpu")
    out: dict[str, torch.Tensor] = dict(tensors)
    for prefix, name in EMBEDDINGS.items():
        key = f"{prefix}.{name}"
        if key in tensors:
            # float32 even in a float16 file: the rescaled old weights rounded to float16 would move w by ~5e-4 and
            # pixels by up to one level, and the surgery is meant to change nothing (loading casts per tensor)
            out[key] = widen_inputs(tensors[key].float(), new_in).contiguous()
        opt = f"opt_{'D' if prefix == 'D' else 'G'}.{name}"
        if prefix != "G_ema" and f"{opt}.exp_avg" in tensors:
            out[f"{opt}.exp_avg"], out[f"{opt}.exp_avg_sq"] = widen_adam_inputs(
                tensors[f"{opt}.exp_avg"], tensors[f"{opt}.exp_avg_sq"], new_in)
    doc["model"] = to_dict(new_cfg)
    record = {"op": "add_parents", "at_nimg": doc.get("nimg"), "kind": cfg.labels[0],
              "parents": list(new_cfg.parent_names), "embedding_inputs": [cfg.c_dim, new_in]}
    return replace_with_surgery(path, out, doc, record, check_same_function, "before_parents" if backup else None)

@torch.no_grad()
def check_same_function(old: Checkpoint, new: Checkpoint, n: int = 4) -> None:
    """Raise unless G_ema with parents draws the old images for the same labels (psi 1 and 0.7) and D with parents
    scores them as before. Up to float rounding: the old weights are rescaled, the new ones are exactly zero."""
    cfg = new.model_cfg
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(n, cfg.z_dim, generator=gen)  # (n, z_dim)
    idx = torch.stack([torch.randint(len(names), (n,), generator=gen) for names in cfg.label_names], dim=1)  # (n, K)
    c = labels_to_c(cfg, idx)  # (n, c_dim)
    for psi in (1.0, 0.7):
        err = (old.G_ema.mapping(z, c=c, psi=psi) - new.G_ema.mapping(z, c=c, psi=psi)).abs().max().item()
        if err > 1e-4:
            raise RuntimeError(f"G_ema with parents maps z differently at psi {psi} (max abs difference {err:.2e})")
    img = old.G_ema(z, c=c, noise_mode="const")  # (n, 3, H, W)
    err = (img - new.G_ema(z, c=c, noise_mode="const")).abs().max().item()
    if err > 1e-4:
        raise RuntimeError(f"G_ema with parents draws different images (max abs difference {err:.2e})")
    if old.D is not None and new.D is not None:
        err = (old.D(img, c) - new.D(img, c)).abs().max().item()
        if err > 1e-3:
            raise RuntimeError(f"D with parents scores images differently (max abs difference {err:.2e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path, help="conditional checkpoint or run state (.safetensors)")
    ap.add_argument("--data", help="the dataset the model was trained on (needed when the file has no model card "
                                   "with each subgroup's group, e.g. a run state)")
    ap.add_argument("--config", type=Path, help="a training config (JSON) to give the same label_parents, so that "
                                                "the run resumes with it")
    ap.add_argument("--no-backup", action="store_true", help="do not keep <name>.before_parents.safetensors")
    a = ap.parse_args()
    rec = add_parents(a.path, load_dataset(a.data) if a.data else None, backup=not a.no_backup)
    print(f"{a.path}: {len(rec['parents'])} parents added to the {rec['kind']} labels "
          f"(embedding inputs {rec['embedding_inputs'][0]} -> {rec['embedding_inputs'][1]}); images and D scores unchanged")
    if a.config:
        doc = json.loads(a.config.read_text())
        doc.setdefault("model", {})["label_parents"] = read_metadata(a.path)["model"]["label_parents"]
        atomic_write_text(a.config, json.dumps(doc, indent=1) + "\n")
        print(f"{a.config}: model.label_parents set")


if __name__ == "__main__":
    main()
