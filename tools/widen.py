"""Widen a generator and/or discriminator in a run state or checkpoint without changing what they compute.

    python -m tools.widen runs/emoji64/state.safetensors --channel-min 32
    python -m tools.widen runs/emoji64/state.safetensors --channel-min 32 --d-channel-min 32

Why: the emoji64 model draws its 64 px layer with 16 channels (`channel_base` 1024), chosen to fit 2 CPU cores.
Soft outlines may be a capacity limit there. Raising `channel_min` (or `channel_base`) in the model config makes
some layers wider; this tool makes an existing run match it, so the run can resume with the wider config (same
`--resume`, config file with the new widths) instead of restarting from scratch.

How (function preserving, in the spirit of Net2Net): every tensor of the wider network starts from a fresh
initialisation. The old tensor is copied into its leading block. The weights from a new input channel into an old
output channel are set to zero, so the old outputs, and therefore the image and D's score, do not change, while
the new channels have a gradient and start learning at once. Equalized learning rate divides each conv by
sqrt(fan_in), so old conv weights are scaled by sqrt(new_in / old_in) to keep their effective value. G and G_ema get
the same fresh values. Adam's moments are widened the same way: old entries keep their (rescaled) values, new
first moments are zero and new second moments take the mean of the old ones (a zero second moment would make the
first step of every new weight 10x the learning rate with betas (0, 0.99)).

The tool checks that G_ema's images and D's scores are unchanged (fp32 tolerance) on a new file beside the old
one, records the change in the metadata under "surgery", and only then replaces the file (atomically), keeping a
copy of the original beside it unless --no-backup.
"""
import argparse
import dataclasses
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from gan.checkpoint import load_checkpoint, read_metadata, write_safetensors
from gan.config import ModelConfig, from_dict, to_dict
from gan.io import replace_checked
from gan.networks import Discriminator, Generator


def widen_tensor(old: torch.Tensor, fresh: torch.Tensor, name: str) -> torch.Tensor:
    """Embed `old` in the leading block of `fresh` (a freshly initialised tensor of the wider shape).

    4-D tensors are conv weights (out, in, k, k): old weights are scaled by sqrt(new_in / old_in) and the block
    [old outputs, new inputs] is zero. 2-D tensors are fully connected weights (out, in), which may only grow in
    `out` (the style affines). Everything else (biases, the 4x4 const) grows along its first dimension only.
    """
    if old.shape == fresh.shape:
        return old.clone()
    if old.ndim != fresh.ndim or any(o > f for o, f in zip(old.shape, fresh.shape)):
        raise ValueError(f"{name}: cannot narrow or reshape {tuple(old.shape)} -> {tuple(fresh.shape)}")
    out = fresh.to(old.dtype).clone()
    if old.ndim == 4:
        o, i = old.shape[:2]
        out[:o, :i] = old * math.sqrt(fresh.shape[1] / i)
        out[:o, i:] = 0
    elif old.ndim == 2:
        if old.shape[1] != fresh.shape[1]:
            raise ValueError(f"{name}: a fully connected layer's input width changed ({old.shape[1]} -> {fresh.shape[1]})")
        out[: old.shape[0]] = old
    else:
        if old.shape[1:] != fresh.shape[1:]:
            raise ValueError(f"{name}: only the first dimension may grow ({tuple(old.shape)} -> {tuple(fresh.shape)})")
        out[: old.shape[0]] = old
    return out


def widen_adam(m: torch.Tensor, v: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Widen Adam's first and second moments of one parameter to `shape` (see the module docstring)."""
    scale = shape[1] / m.shape[1] if m.ndim == 4 else 1.0  # gradients shrink by sqrt(scale) when the gain does
    m_new = torch.zeros(shape, dtype=m.dtype)
    v_new = torch.full(shape, float(v.mean()) / scale, dtype=v.dtype)
    block = tuple(slice(0, s) for s in m.shape)
    m_new[block] = m / math.sqrt(scale)
    v_new[block] = v / scale
    return m_new, v_new


def widen(path: Path, channel_min: int | None = None, d_channel_min: int | None = None, channel_base: int | None = None,
          d_channel_base: int | None = None, backup: bool = True, seed: int = 0) -> dict[str, list[int]]:
    """Rewrite `path` with a wider model config. Returns the old and new channels per resolution of G and D."""
    doc = read_metadata(path)
    cfg = from_dict(ModelConfig, doc["model"])
    changes = {k: v for k, v in dict(channel_min=channel_min, d_channel_min=d_channel_min, channel_base=channel_base,
                                       d_channel_base=d_channel_base).items() if v is not None}
    new_cfg = dataclasses.replace(cfg, **changes)
    res = [2**i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
    widths = {"G_from": [cfg.channels(r) for r in res], "G_to": [new_cfg.channels(r) for r in res],
              "D_from": [cfg.d_channels(r) for r in res], "D_to": [new_cfg.d_channels(r) for r in res]}
    if any(n < o for n, o in zip(widths["G_to"] + widths["D_to"], widths["G_from"] + widths["D_from"])):
        raise ValueError(f"{path}: the new config would narrow a layer ({widths}); this tool only widens")
    if widths["G_to"] == widths["G_from"] and widths["D_to"] == widths["D_from"]:
        raise ValueError(f"{path}: the new config has the same widths; nothing to do")
    if new_cfg.d_channels(4) != cfg.d_channels(4):
        raise ValueError("widening D's 4x4 epilogue (a fully connected layer over c*4*4 inputs) is not supported")

    torch.manual_seed(seed)
    fresh = {"G": Generator(new_cfg).state_dict(), "D": Discriminator(new_cfg).state_dict()}
    tensors = load_file(str(path), device="cpu")
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        prefix, _, name = key.partition(".")
        net = "D" if prefix in ("D", "opt_D") else "G"
        if prefix in ("G", "G_ema", "D"):
            out[key] = widen_tensor(t, fresh[net][name], key)
        elif prefix in ("opt_G", "opt_D"):
            pname, _, stat = name.rpartition(".")
            if stat == "exp_avg":
                v = tensors[f"{prefix}.{pname}.exp_avg_sq"]
                out[key], out[f"{prefix}.{pname}.exp_avg_sq"] = widen_adam(t, v, fresh[net][pname].shape)
            elif stat == "step":
                out[key] = t
        else:
            out[key] = t  # RNG states
    doc["model"] = to_dict(new_cfg)
    doc.setdefault("surgery", []).append({"op": "widen", "at_nimg": doc.get("nimg"), "changed": changes, **widths})
    # A failed check (different images or D scores, or a file that does not fit the config) leaves the original.
    replace_checked(path, lambda tmp: write_safetensors(tmp, out, doc),
                    lambda tmp: check_same_function(load_checkpoint(path), load_checkpoint(tmp)),
                    backup=path.with_name(path.stem + ".before_widen" + path.suffix) if backup else None)
    return widths


@torch.no_grad()
def check_same_function(old, new, n: int = 4) -> None:
    """Raise if the widened G_ema draws different images or the widened D scores them differently."""
    z = torch.randn(n, old.model_cfg.z_dim, generator=torch.Generator().manual_seed(123))
    ws = old.G_ema.mapping(z)  # (n, num_ws, w_dim)
    img_old = old.G_ema.synthesis(ws, noise_mode="const")  # (n, 3, H, W)
    img_new = new.G_ema.synthesis(ws, noise_mode="const")
    err = (img_old - img_new).abs().max().item()
    if err > 1e-4:
        raise RuntimeError(f"widened G_ema draws different images (max abs difference {err:.2e})")
    if old.D is not None and new.D is not None:
        err = (old.D(img_old) - new.D(img_old)).abs().max().item()
        if err > 1e-3:
            raise RuntimeError(f"widened D scores images differently (max abs difference {err:.2e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("--channel-min", type=int, help="new floor on G's channels")
    ap.add_argument("--d-channel-min", type=int, help="new floor on D's channels")
    ap.add_argument("--channel-base", type=int, help="new channel_base of G")
    ap.add_argument("--d-channel-base", type=int, help="new channel_base of D")
    ap.add_argument("--no-backup", action="store_true")
    a = ap.parse_args()
    w = widen(a.path, a.channel_min, a.d_channel_min, a.channel_base, a.d_channel_base, backup=not a.no_backup)
    print(f"G channels {w['G_from']} -> {w['G_to']}, D channels {w['D_from']} -> {w['D_to']}; images and D scores unchanged")


if __name__ == "__main__":
    main()
