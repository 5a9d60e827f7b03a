"""Checkpoints: safetensors for tensors + JSON metadata, written atomically, never pickled.

One file holds everything: tensors are named `<module>.<param>` (module in G, G_ema, D, and for resumable run
states opt_G/opt_D/rng), and the safetensors header carries a JSON document under the key "gan_studio" with the
model config, training config, images seen, dataset name and licence, parent hash and metrics. Shipped files may
store weights as float16; loading casts back to float32 (each fp16 value is exactly representable in fp32, so the
loaded model equals the stored one bit for bit).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gan.config import ModelConfig, from_dict, to_dict
from gan.io import atomic_path, atomic_write_text, file_sha256, replace_checked
from gan.networks import Generator

FORMAT = "gan-studio-checkpoint"
FORMAT_VERSION = 1
META_KEY = "gan_studio"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, foreign or does not fit the model."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, as modules ready to use (on CPU, fp32)."""

    model_cfg: ModelConfig
    G_ema: Generator
    G: Generator | None = None
    D: torch.nn.Module | None = None  # of the kind the metadata's "discriminator" names (gan/discriminators.py)
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer and RNG tensors of a run state
    path: Path | None = None
    sha256: str = ""


# ----------------------------------------------------------------------------------------------------------------
# Optimizer state <-> flat named tensors


def optimizer_to_tensors(prefix: str, opt: torch.optim.Optimizer, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Adam state as `{prefix}.{param_name}.{exp_avg|exp_avg_sq|step}` tensors, keyed by parameter name."""
    names = {id(p): n for n, p in module.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for k, v in state.items():
                out[f"{prefix}.{names[id(p)]}.{k}"] = torch.as_tensor(v).detach().cpu().float().clone()
    return out


def optimizer_from_tensors(prefix: str, opt: torch.optim.Optimizer, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> int:
    """Restore what `optimizer_to_tensors` saved. Returns the number of parameters restored."""
    restored = 0
    params = dict(module.named_parameters())
    # Fused (and capturable) Adam keeps its step counter on the parameter's device; the default one on the CPU.
    on_device = {id(p) for g in opt.param_groups if g.get("fused") or g.get("capturable") for p in g["params"]}
    for name, p in params.items():
        keys = {k: f"{prefix}.{name}.{k}" for k in ("exp_avg", "exp_avg_sq", "step")}
        if all(v in tensors for v in keys.values()):
            st = opt.state[p]
            # empty_like keeps the parameter's memory format (channels_last weights get channels_last moments)
            st["exp_avg"] = torch.empty_like(p).copy_(tensors[keys["exp_avg"]])
            st["exp_avg_sq"] = torch.empty_like(p).copy_(tensors[keys["exp_avg_sq"]])
            step = tensors[keys["step"]].float().reshape([]).clone()
            st["step"] = step.to(p.device) if id(p) in on_device else step
            restored += 1
    return restored


# ----------------------------------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(
    path: str | Path,
    model_cfg: ModelConfig,
    G_ema: Generator,
    G: Generator | None = None,
    D: torch.nn.Module | None = None,
    meta: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    write_card: bool = False,
) -> Path:
    """Write a checkpoint atomically. `dtype=torch.float16` halves the size of the weights (for shipping).

    `write_card` also writes `<name>.json` beside it: the same metadata, for people and model hubs.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("G_ema", G_ema), ("G", G), ("D", D)):
        if module is None:
            continue
        for k, v in module.state_dict().items():
            v = v.detach().cpu()
            tensors[f"{prefix}.{k}"] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "model": to_dict(model_cfg), **(meta or {})}
    if D is not None:  # what rebuilds this D on loading (the card records the kind)
        from gan.discriminators import DiscriminatorSpec

        doc["discriminator"] = DiscriminatorSpec.of_module(D).to_meta()
    doc["storage_dtype"] = str(dtype).replace("torch.", "")
    write_safetensors(path, tensors, doc)
    if write_card:
        atomic_write_text(path.with_suffix(".json"), json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> Path:
    """Atomically write tensors + a JSON document (under the header key "gan_studio") to a .safetensors file."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(doc, sort_keys=True)})
    return Path(path)


def replace_with_surgery(path: str | Path, tensors: dict[str, torch.Tensor], doc: dict[str, Any], record: dict[str, Any],
                         check: Callable[[Checkpoint, Checkpoint], object], backup_suffix: str | None) -> dict[str, Any]:
    """Model surgery's last step: record the change under "surgery" in `doc`, write `tensors` + `doc` beside `path`,
    run check(old, new) on the two loaded checkpoints, keep the original as <name>.<backup_suffix>.safetensors (None:
    no copy), then replace `path` atomically and refresh the <name>.json card beside it, if there is one. A failed
    write or check leaves the original untouched. Returns `record`."""
    path = Path(path)
    doc.setdefault("surgery", []).append(record)
    replace_checked(path, lambda tmp: write_safetensors(tmp, tensors, doc),
                    lambda tmp: check(load_checkpoint(path), load_checkpoint(tmp)),
                    backup=path.with_name(f"{path.stem}.{backup_suffix}{path.suffix}") if backup_suffix else None)
    card = path.with_suffix(".json")
    if card.exists():  # the human-readable card beside a shipped checkpoint carries the same metadata
        atomic_write_text(card, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return record


def read_metadata(path: str | Path, expect_format: str = FORMAT) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, reading only its header. Raises CheckpointError with a clear reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, expected a .safetensors file: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a safetensors file (only {len(head)} bytes)")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > 100_000_000 or n > path.stat().st_size - 8:
                raise CheckpointError(f"{path} is not a safetensors file (bad header length; truncated or foreign?)")
            header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a safetensors file (unreadable header: {e})") from None
    raw = (header.get("__metadata__") or {}).get(META_KEY)
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a GAN Studio checkpoint (no '{META_KEY}' metadata)")
    doc = json.loads(raw)
    if doc.get("format") != expect_format:
        raise CheckpointError(f"{path}: unknown checkpoint format {doc.get('format')!r}")
    if int(doc.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc['version']} is newer than this code ({FORMAT_VERSION})")
    return doc


def _load_module(module: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor], path: Path) -> None:
    sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("wrong shape " + ", ".join(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:5]))
        raise CheckpointError(f"{path}: {prefix} weights do not fit the model config ({'; '.join(parts)})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})


def load_checkpoint(path: str | Path, need_d: bool = False) -> Checkpoint:
    """Load a checkpoint onto the CPU in fp32. Raises CheckpointError (never unpickles anything)."""
    path = Path(path)
    doc = read_metadata(path)
    try:
        model_cfg = from_dict(ModelConfig, doc["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config in metadata ({e})") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read as safetensors (truncated or corrupt?): {e}") from None
    ck = Checkpoint(model_cfg=model_cfg, G_ema=Generator(model_cfg), meta=doc, path=path, sha256=file_sha256(path))
    _load_module(ck.G_ema, "G_ema", tensors, path)
    ck.G_ema.eval().requires_grad_(False)
    if any(k.startswith("G.") for k in tensors):
        ck.G = Generator(model_cfg)
        _load_module(ck.G, "G", tensors, path)
    if any(k.startswith("D.") for k in tensors):
        from gan.discriminators import DiscriminatorSpec, build_discriminator  # (which imports this module's users)

        try:
            ck.D = build_discriminator(model_cfg, DiscriminatorSpec.of_meta(doc))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: unknown discriminator in metadata ({e})") from None
        _load_module(ck.D, "D", tensors, path)
    elif need_d:
        raise CheckpointError(f"{path} holds no discriminator (D.*), which fine-tuning needs")
    ck.extra = {k: v for k, v in tensors.items() if k.split(".", 1)[0] not in ("G_ema", "G", "D")}
    return ck
