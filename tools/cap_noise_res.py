"""Remove a generator's per-pixel noise inputs above a resolution, in a checkpoint or a resumable run state.

    python -m tools.cap_noise_res runs/emoji64/state.safetensors --noise-max-res 16

Why: on flat-colour emoji G learned to use the 32 px noise input as a brush-stroke texture. Setting the model
config's `noise_max_res` removes those inputs from the architecture; this tool makes an existing run match it, so
the run can resume (with the same `noise_max_res` in its config file) instead of restarting. It drops the noise
strengths, constant noise maps and their Adam state for G and G_ema, records the change in the metadata under
"surgery", writes the result to a sibling file and checks that it loads, and only then replaces the original
atomically, keeping a copy of it beside the result unless --no-backup.
"""
import argparse
import dataclasses
from pathlib import Path

from safetensors.torch import load_file

from gan.checkpoint import load_checkpoint, read_metadata, write_safetensors
from gan.config import ModelConfig, from_dict, to_dict
from gan.io import replace_checked
from gan.networks import Generator


def cap_noise_res(path: Path, noise_max_res: int, backup: bool = True) -> list[str]:
    """Rewrite `path` without noise inputs above `noise_max_res`. Returns the removed tensor names."""
    doc = read_metadata(path)
    cfg = from_dict(ModelConfig, doc["model"])
    if noise_max_res > cfg.noise_max_res:
        raise ValueError(f"{path} already has no noise above {cfg.noise_max_res} px; cannot add noise inputs back")
    new_cfg = dataclasses.replace(cfg, noise_max_res=noise_max_res)
    # What the capped generator no longer has: its weights/buffers (in G and G_ema) and the Adam state of its params.
    gone = set(Generator(cfg).state_dict()) - set(Generator(new_cfg).state_dict())
    gone_keys = {f"{prefix}.{name}" for prefix in ("G", "G_ema") for name in gone}
    gone_opt = tuple(f"opt_G.{name}." for name in gone)
    tensors = load_file(str(path), device="cpu")
    removed = [k for k in tensors if k in gone_keys or k.startswith(gone_opt)]
    for k in removed:
        del tensors[k]
    doc["model"] = to_dict(new_cfg)
    doc.setdefault("surgery", []).append(
        {"op": "cap_noise_res", "noise_max_res": noise_max_res, "at_nimg": doc.get("nimg"), "removed_tensors": len(removed)}
    )
    # A failed check (the result does not fit the new config) leaves the original untouched.
    replace_checked(path, lambda tmp: write_safetensors(tmp, tensors, doc), lambda tmp: load_checkpoint(tmp),
                    backup=path.with_name(path.stem + f".before_cap{noise_max_res}" + path.suffix) if backup else None)
    return removed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path)
    ap.add_argument("--noise-max-res", type=int, required=True)
    ap.add_argument("--no-backup", action="store_true")
    a = ap.parse_args()
    removed = cap_noise_res(a.path, a.noise_max_res, backup=not a.no_backup)
    print(f"removed {len(removed)} tensors; {a.path} now has noise inputs only up to {a.noise_max_res} px")


if __name__ == "__main__":
    main()
