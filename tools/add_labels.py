"""Give an unconditional checkpoint or run state label inputs (a label embedding in G, a projection head in D)
without changing what it computes: the starting point of transitional conditional training.

    python -m tools.add_labels checkpoints/emoji64.safetensors --labels subgroup --data data/emoji64
    python -m tools.add_labels runs/emoji64x3/state.safetensors --labels subgroup,style --data data/emoji64x3

Why (Shahbazi et al., ICLR 2022; design notes, section 9): on small data, conditioning from the start collapses
the thin classes. Training starts unconditional and ramps lambda 0 -> 1; an unconditional model is exactly the
lambda = 0 state, so the shipped model can be continued instead of retrained.

How: the labels' class names come from the dataset (one label kind per entry of --labels, in that order; c is
their one-hot blocks concatenated). G and G_ema get the same fresh label embedding and a projection into the
mapping whose weights are zero, and label_lambda = 0; D gets a fresh label mapping and a projection head whose
output weights are zero. Either zero alone keeps images and scores unchanged, so the first training steps have
a gradient into the projections at once. Adam state for the new weights starts empty (as for any new
parameter). Per-class w_avg (the truncation centres, one per label combination, e.g. subgroup x style) are sampled
from each generator's mapping, which gives exactly w_avg while the label term is zero; training keeps them up to
date (update_w_avg with c), and gan.networks.estimate_class_w_avg recomputes them from a trained mapping.

The tool checks on a new file beside the old one that G_ema draws the same images (with and without a label, with
and without truncation) and that D scores them the same (with and without a label), records the change under
"surgery" in the metadata (and in the <name>.json card beside it, if there is one), and only then replaces the
file atomically, keeping a copy of the original beside it unless --no-backup.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from gan.checkpoint import Checkpoint, read_metadata, replace_with_surgery
from gan.config import ModelConfig, from_dict, to_dict
from gan.dataset import ImageDataset, load_dataset
from gan.labels import label_info
from gan.networks import Discriminator, Generator, estimate_class_w_avg, labels_to_c

W_AVG_SAMPLES = 256  # z samples per label combination for the per-class w_avg


def add_labels(path: str | Path, kinds: list[str], data: ImageDataset, backup: bool = True, seed: int = 0,
               w_avg_samples: int = W_AVG_SAMPLES) -> dict[str, Any]:
    """Rewrite `path` with label inputs for `kinds` (label names of `data`, e.g. ['subgroup', 'style']).

    Returns the surgery record written to the metadata.
    """
    path = Path(path)
    doc = read_metadata(path)
    cfg = from_dict(ModelConfig, doc["model"])
    if cfg.labels:
        raise ValueError(f"{path} already has labels {list(cfg.labels)}; this tool only adds them to an unconditional model")
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"give one or more distinct label kinds, got {kinds}")
    missing = [k for k in kinds if k not in data.labels]
    if missing:
        raise ValueError(f"dataset {data.name!r} has no {missing} labels (it has: {', '.join(data.labels) or 'none'})")
    if not data.items:
        raise ValueError(f"dataset {data.name!r} has no per-image labels")
    new_cfg = dataclasses.replace(cfg, labels=tuple(kinds), label_names=tuple(tuple(data.labels[k]) for k in kinds))

    torch.manual_seed(seed)
    fresh = {"G": Generator(new_cfg).state_dict(), "D": Discriminator(new_cfg).state_dict()}
    tensors = load_file(str(path), device="cpu")
    out: dict[str, torch.Tensor] = dict(tensors)
    added: dict[str, int] = {}
    for prefix in ("G", "G_ema", "D"):
        if not any(k.startswith(prefix + ".") for k in tensors):
            continue
        net = "D" if prefix == "D" else "G"
        # Store new tensors as the file stores its weights (shipped checkpoints are float16).
        dtype = next(v.dtype for k, v in tensors.items() if k.startswith(prefix + ".") and v.is_floating_point())
        for name, t in fresh[net].items():
            key = f"{prefix}.{name}"
            if key not in tensors:
                out[key] = t.to(dtype).contiguous()
                added[prefix] = added.get(prefix, 0) + t.numel()
    # Per-class w_avg from each generator's own mapping (G_ema's weights are not G's).
    for prefix in ("G", "G_ema"):
        if prefix not in added:
            continue
        G = Generator(new_cfg)
        G.load_state_dict({k[len(prefix) + 1:]: v.float() for k, v in out.items() if k.startswith(prefix + ".")})
        w_avg_c = estimate_class_w_avg(G, n=w_avg_samples, seed=seed)  # (combinations, w_dim)
        out[f"{prefix}.mapping_net.w_avg_c"] = w_avg_c.to(out[f"{prefix}.mapping_net.w_avg"].dtype).contiguous()

    doc["model"] = to_dict(new_cfg)
    record = {"op": "add_labels", "at_nimg": doc.get("nimg"), "labels": list(kinds),
              "classes": [len(data.labels[k]) for k in kinds], "dataset": data.name, "seed": seed,
              "new_parameters": added, "label_lambda": 0.0,
              "w_avg_c": f"sampled from the mapping ({w_avg_samples} z per label combination)"}
    doc["label_info"] = label_info(data, kinds)  # class counts and subgroup -> group, for the app's pickers
    return replace_with_surgery(path, out, doc, record, check_same_function, "before_labels" if backup else None)


@torch.no_grad()
def check_same_function(old: Checkpoint, new: Checkpoint, n: int = 4) -> None:
    """Raise unless the labelled G_ema draws exactly the old images (label or not, psi 1 or 0.7) and the labelled
    D scores them exactly as before (label or not). Exact: the new terms are multiplied by zero, not just small."""
    cfg = new.model_cfg
    assert cfg.c_dim > 0 and not old.model_cfg.labels
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(n, cfg.z_dim, generator=gen)  # (n, z_dim)
    idx = torch.stack([torch.randint(len(names), (n,), generator=gen) for names in cfg.label_names], dim=1)  # (n, K)
    c = labels_to_c(cfg, idx)  # (n, c_dim)
    for psi in (1.0, 0.7):
        ws_old = old.G_ema.mapping(z, psi=psi)  # (n, num_ws, w_dim)
        for ws_new in (new.G_ema.mapping(z, psi=psi), new.G_ema.mapping(z, c=c, psi=psi)):
            err = (ws_old - ws_new).abs().max().item()
            if err > 0:
                raise RuntimeError(f"labelled G_ema maps z differently at psi {psi} (max abs difference {err:.2e})")
    img = old.G_ema.synthesis(old.G_ema.mapping(z), noise_mode="const")  # (n, 3, H, W)
    err = (img - new.G_ema.synthesis(new.G_ema.mapping(z, c=c), noise_mode="const")).abs().max().item()
    if err > 0:
        raise RuntimeError(f"labelled G_ema draws different images (max abs difference {err:.2e})")
    if old.D is not None and new.D is not None:
        before = old.D(img)  # (n, 1)
        for after in (new.D(img), new.D(img, c)):
            err = (before - after).abs().max().item()
            if err > 0:
                raise RuntimeError(f"labelled D scores images differently (max abs difference {err:.2e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path, help="checkpoint or run state (.safetensors)")
    ap.add_argument("--labels", required=True, help="label kinds, comma-separated, e.g. 'subgroup' or 'group,style'")
    ap.add_argument("--data", required=True, help="the dataset folder the labels (and their class names) come from")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new weights and of the w_avg sampling")
    ap.add_argument("--no-backup", action="store_true", help="do not keep <name>.before_labels.safetensors")
    a = ap.parse_args()
    kinds = [k.strip() for k in a.labels.split(",") if k.strip()]
    rec = add_labels(a.path, kinds, load_dataset(a.data), backup=not a.no_backup, seed=a.seed)
    classes = ", ".join(f"{k} ({n} classes)" for k, n in zip(rec["labels"], rec["classes"]))
    print(f"{a.path}: labels {classes} added with lambda 0; images and D scores unchanged")


if __name__ == "__main__":
    main()
