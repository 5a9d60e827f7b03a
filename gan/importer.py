"""Import StyleGAN2 weights from NVlabs network pickles (.pkl) and rosinality checkpoints (.pt), safely, once.

Both formats are pickles, and unpickling runs whatever the file names. So neither is ever unpickled with the
standard loader:

* NVlabs pickles (stylegan2-ada-pytorch, stylegan3's stylegan2 configs) go through `RestrictedUnpickler`, which
  resolves only the globals a network pickle needs. Each network module is a `torch_utils.persistence` object whose
  reconstruction record carries its class name, its state and the *source code of its module*; the real
  reconstruct function execs that source. Here it maps to `PersistentStub`, which keeps the class name, the state
  and the constructor arguments and never looks at the source. Tensors come back bit-exactly through torch's own
  rebuild functions; the raw storage bytes are read with `torch.load(weights_only=True)`.
* rosinality checkpoints go through `torch.load(weights_only=True)` with `argparse.Namespace` (train.py's `args`)
  as the only extra allowed global.

The weights are then renamed onto gan.networks and written once as a safetensors checkpoint + JSON card, so the app
never touches the pickle again. Imported models use `ModelConfig.resample_mode='nvlabs'` (the border and stride
arithmetic of NVlabs' resampling convs) and, where the source used it, `conv_clamp`; the up-sampling conv weights
are flipped, because NVlabs and rosinality run them as transposed convolutions (a true convolution) where
gan.networks correlates.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import math
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from gan.checkpoint import save_checkpoint
from gan.config import ModelConfig
from gan.io import file_sha256
from gan.networks import Discriminator, Generator, fir_kernel

FORMATS = ("nvlabs-pkl", "rosinality-pt")
W_AVG_SAMPLES = 4096  # rosinality's generate.py: truncation centre = mean of mapping(z) over 4096 random z
W_AVG_SEED = 0  # fixed, so that importing the same file twice gives the same checkpoint


class ImportRefused(ValueError):
    """The file is not a network this importer can convert faithfully (or it is not safe to read)."""


# ----------------------------------------------------------------------------------------------------------------
# NVlabs network pickles: a restricted unpickler


class PersistentStub:
    """What `torch_utils.persistence._reconstruct_persistent_obj` would rebuild, as inert data.

    Keeps the class name, the pickled `__dict__` (parameters, buffers, submodules, plain attributes) and the
    constructor arguments. The module source in the record is dropped unread.
    """

    def __init__(self, meta: dict[str, Any]):
        if not isinstance(meta, dict):
            raise ImportRefused("malformed persistent-object record in the network pickle (not a dict)")
        self.class_name = str(meta.get("class_name", "?"))
        self.version = meta.get("version")
        state = meta.get("state") or {}
        self.state: dict[str, Any] = dict(state) if isinstance(state, dict) else {}
        self.init_kwargs: dict[str, Any] = dict(self.state.get("_init_kwargs") or {})

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def children(self) -> dict[str, PersistentStub]:
        mods = self.state.get("_modules") or {}
        return {k: v for k, v in mods.items() if isinstance(v, PersistentStub)}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat {'a.b.weight': tensor} of every parameter and buffer below this module, like `state_dict()`."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if isinstance(v, torch.Tensor):
                    out[prefix + k] = v.detach()
        for k, m in self.children().items():
            out.update(m.tensors(f"{prefix}{k}."))
        return out

    def modules(self, prefix: str = "") -> Iterator[tuple[str, PersistentStub]]:
        """(dotted name, stub) for this module and every submodule."""
        yield prefix.rstrip("."), self
        for k, m in self.children().items():
            yield from m.modules(f"{prefix}{k}.")


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (init_kwargs and training_set_kwargs are pickled as one)."""


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentStub:
    return PersistentStub(meta)


def _load_storage_bytes(b: bytes) -> Any:
    """torch.storage._load_from_bytes without running a full unpickler: the bytes are a torch.save of a storage."""
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise ImportRefused(f"unexpected _codecs.encode({encoding!r}) in a network pickle")
    return text.encode("latin1")


def _numpy_core(name: str) -> Any:
    try:
        from numpy._core import multiarray  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, name)


_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("torch", "Size"): torch.Size,
        ("_codecs", "encode"): _latin1_bytes,  # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # old pickles say numpy.core, NumPy 2 numpy._core
        allowed[(mod, "scalar")] = _numpy_core("scalar")
        allowed[(mod, "_reconstruct")] = _numpy_core("_reconstruct")
    for s in _STORAGES:
        allowed[("torch", f"{s}Storage")] = getattr(torch, f"{s}Storage")
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles NVlabs network pickles, resolving only the globals listed in `_allowed_globals`.

    Anything else (os.system, builtins.eval, a class from the pickled module source, ...) raises ImportRefused
    naming the global, before it is called.
    """

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles use Python 2 names (__builtin__.set); map them as pickle's own find_class does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        fn = self._allowed.get((module, name))
        if fn is None:
            raise ImportRefused(
                f"refusing to load global '{module}.{name}': not something a StyleGAN2 network pickle needs "
                "(the file may be unsafe, or not a network pickle)"
            )
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise ImportRefused("unexpected persistent id in a network pickle (a torch.save file? try the .pt format)")


def read_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """The top-level object of a network pickle: {'G_ema': PersistentStub, 'D': ..., ...}, without running code.

    A bare generator pickle comes back as {'G_ema': stub}.
    """
    with open(path, "rb") as f:
        try:
            obj = RestrictedUnpickler(f).load()
        except ImportRefused:
            raise
        except Exception as e:  # truncated or foreign files fail inside pickle in many ways
            raise ImportRefused(f"{path} could not be read as a network pickle: {type(e).__name__}: {e}") from None
    if isinstance(obj, PersistentStub):
        return {"G_ema": obj}
    if not isinstance(obj, dict) or not any(isinstance(v, PersistentStub) for v in obj.values()):
        raise ImportRefused(
            f"{path} holds no StyleGAN network (expected a snapshot dict with 'G_ema' or a bare generator)"
        )
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers


def _fit_channels(chans: dict[int, int], what: str) -> tuple[int, int]:
    """(channel_base, channel_max) with min(base // r, max) == chans[r] for every resolution r, or ImportRefused."""
    cmax = max(chans.values())
    candidates = [c * r for r, c in chans.items() if c < cmax] or [cmax * max(chans)]
    for base in sorted(set(candidates)):
        if all(min(base // r, cmax) == c for r, c in chans.items()):
            return base, cmax
    raise ImportRefused(f"{what} channel counts {dict(sorted(chans.items()))} do not follow min(base / res, max)")


def _block_resolutions(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _check_resolution(res: int) -> None:
    if res < 8 or res > 1024 or 2 ** int(math.log2(res)) != res:
        raise ImportRefused(f"resolution {res} is not supported (powers of two from 8 to 1024)")


def _load_into(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    wrong = [k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or wrong:
        raise ImportRefused(
            f"{what} does not map onto the StyleGAN2 layout: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}, wrong shape {wrong[:4]}"
        )
    module.load_state_dict({k: v.float() for k, v in sd.items()})


# ----------------------------------------------------------------------------------------------------------------
# NVlabs -> gan.networks


def _uniform(values: list[Any], what: str) -> Any:
    vals = set(values)
    if len(vals) > 1:
        raise ImportRefused(f"{what} differs between layers ({sorted(vals, key=str)}); not supported")
    return vals.pop() if vals else None


def _refuse_unsupported_nvlabs_generator(G: PersistentStub, sd: dict[str, torch.Tensor]) -> None:
    """ImportRefused, saying why, for an NVlabs generator this importer cannot map (StyleGAN3, conditional, not a
    StyleGAN2 synthesis network, an architecture other than 'skip')."""
    keys = list(sd)
    if any(k.startswith("synthesis.input.") for k in keys) or any(re.match(r"synthesis\.L\d+_", k) for k in keys):
        raise ImportRefused(
            "this is a StyleGAN3 (alias-free, -T/-R) generator; only StyleGAN2 generators can be imported"
        )
    c_dim = int(G.init_kwargs.get("c_dim", 0) or 0)
    if c_dim > 0 or any(k.startswith("mapping.embed.") for k in keys):
        raise ImportRefused(f"conditional generator (c_dim={c_dim or '?'}): class labels are not supported yet")
    if "synthesis.b4.const" not in sd:
        raise ImportRefused(f"'{G.class_name}' is not a StyleGAN2 generator (no synthesis.b4.const)")
    syn = G.children().get("synthesis")
    blocks = {name: m for name, m in syn.children().items() if name.startswith("b")} if syn else {}
    archs = [b.attr("architecture", "skip") for b in blocks.values()]
    arch = _uniform(archs, "G architecture") or (G.init_kwargs.get("synthesis_kwargs") or {}).get(
        "architecture", "skip"
    )
    if arch != "skip" or any(k.endswith(".skip.weight") for k in keys):
        raise ImportRefused(f"G architecture '{arch}' is not supported (only StyleGAN2's default 'skip')")


def _nvlabs_generator(G: PersistentStub) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """ModelConfig fields and our G state dict from an NVlabs generator stub."""
    sd = G.tensors()
    keys = list(sd)
    _refuse_unsupported_nvlabs_generator(G, sd)
    res_list = _block_resolutions(keys, r"synthesis\.b(\d+)\.")
    res = max(res_list)
    _check_resolution(res)
    if res_list != [2**i for i in range(2, int(math.log2(res)) + 1)]:
        raise ImportRefused(f"unexpected synthesis blocks {res_list}")
    n_map = len(_block_resolutions(keys, r"mapping\.fc(\d+)\.weight"))
    fc = [sd[f"mapping.fc{i}.weight"] for i in range(n_map)]
    z_dim, w_dim = fc[0].shape[1], fc[-1].shape[0]
    if any(w.shape[0] != w_dim for w in fc) or any(w.shape[1] != w_dim for w in fc[1:]):
        raise ImportRefused("mapping layers narrower or wider than w_dim are not supported")
    # The layer's bias gain is its learning-rate multiplier (0.01 for StyleGAN2); read it rather than assume.
    fc0 = G.children()["mapping"].children()["fc0"]
    lr_mul = float(fc0.attr("bias_gain", (G.init_kwargs.get("mapping_kwargs") or {}).get("lr_multiplier", 0.01)))
    chans = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res_list}
    base, cmax = _fit_channels(chans, "generator")
    # stylegan3's stylegan2 configs leave conv_clamp out of init_kwargs (class default 256), but every layer's state
    # holds the value it ran with: trust the layers, fall back to the constructor arguments.
    clamps = [m.attr("conv_clamp") for _, m in G.modules() if "conv_clamp" in m.state]
    if clamps:
        conv_clamp = _uniform([None if c is None else float(c) for c in clamps], "G conv_clamp")
    else:
        conv_clamp = (G.init_kwargs.get("synthesis_kwargs") or {}).get("conv_clamp")
    img_channels = int(sd[f"synthesis.b{res}.torgb.weight"].shape[0])
    if img_channels != 3:
        raise ImportRefused(f"{img_channels}-channel generators are not supported (RGB only)")
    fields = dict(
        resolution=res,
        z_dim=int(z_dim),
        w_dim=int(w_dim),
        mapping_layers=n_map,
        mapping_lr_mul=lr_mul,
        channel_base=base,
        channel_max=cmax,
        noise_max_res=1024,
        resample_mode="nvlabs",
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
    )
    return fields, _nvlabs_generator_state(sd, n_map, res_list)


def _nvlabs_generator_state(sd: dict[str, torch.Tensor], n_map: int, res_list: list[int]) -> dict[str, torch.Tensor]:
    """An NVlabs G state dict under gan.networks' names (mapping fc{i} -> layers.{i}, synthesis b{res} -> blocks)."""
    ours: dict[str, torch.Tensor] = {"mapping_net.w_avg": sd["mapping.w_avg"]}
    for i in range(n_map):
        ours[f"mapping_net.layers.{i}.weight"] = sd[f"mapping.fc{i}.weight"]
        ours[f"mapping_net.layers.{i}.bias"] = sd[f"mapping.fc{i}.bias"]
    for bi, r in enumerate(res_list):
        src, dst = f"synthesis.b{r}.", f"synthesis_net.blocks.{bi}."
        if r == 4:
            ours[dst + "const"] = sd[src + "const"]
        for conv in ("conv1",) if r == 4 else ("conv0", "conv1"):
            for p in ("weight", "bias", "noise_strength", "noise_const", "affine.weight", "affine.bias"):
                ours[f"{dst}{conv}.{p}"] = sd[f"{src}{conv}.{p}"]
        for p in ("weight", "bias", "affine.weight", "affine.bias"):
            ours[f"{dst}torgb.{p}"] = sd[f"{src}torgb.{p}"]
        if r > 4:  # transposed conv = true convolution: flip the kernel for our correlating conv
            ours[dst + "conv0.weight"] = ours[dst + "conv0.weight"].flip([2, 3])
    return ours


def _nvlabs_discriminator(D: PersistentStub, res: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """D-side ModelConfig fields and our D state dict from an NVlabs discriminator stub."""
    sd = D.tensors()
    keys = list(sd)
    if int(D.init_kwargs.get("c_dim", 0) or 0) > 0 or any(k.startswith("mapping.") for k in keys):
        raise ImportRefused("conditional discriminator: class labels are not supported yet")
    blocks = {n: m for n, m in D.children().items() if re.fullmatch(r"b\d+", n)}
    arch = _uniform([m.attr("architecture", "resnet") for m in blocks.values()], "D architecture") or "resnet"
    if arch != "resnet":
        raise ImportRefused(f"D architecture '{arch}' is not supported (only StyleGAN2's default 'resnet')")
    res_list = sorted(_block_resolutions(keys, r"b(\d+)\.conv1\."), reverse=True)
    if res_list != [2**i for i in range(int(math.log2(res)), 2, -1)] or f"b{res}.fromrgb.weight" not in sd:
        raise ImportRefused(f"discriminator blocks {res_list} do not match the generator's resolution {res}")
    chans = {r: int(sd[f"b{r}.conv0.weight"].shape[0]) for r in res_list}
    chans[4] = int(sd["b4.conv.weight"].shape[0])
    base, cmax = _fit_channels(chans, "discriminator")
    mbstd = D.children()["b4"].children().get("mbstd")
    group = mbstd.attr("group_size", 4) if mbstd else None
    nch = int(mbstd.attr("num_channels", 1)) if mbstd else 0
    if group is None or nch < 1:
        raise ImportRefused("discriminator without a fixed minibatch-stddev group size is not supported")
    clamps = [m.attr("conv_clamp") for n, m in D.modules() if "conv_clamp" in m.state and not n.endswith("skip")]
    conv_clamp = _uniform([None if c is None else float(c) for c in clamps], "D conv_clamp")
    fields = dict(
        d_channel_base=base,
        d_channel_max=cmax,
        mbstd_group_size=int(group),
        mbstd_num_channels=nch,
        conv_clamp=conv_clamp,
    )
    ours: dict[str, torch.Tensor] = {}
    for bi, r in enumerate(res_list):
        for layer in (["fromrgb"] if bi == 0 else []) + ["conv0", "conv1", "skip"]:
            for p in ("weight", "bias"):
                if f"b{r}.{layer}.{p}" in sd:
                    ours[f"blocks.{bi}.{layer}.{p}"] = sd[f"b{r}.{layer}.{p}"]
    for layer in ("conv", "fc", "out"):
        for p in ("weight", "bias"):
            ours[f"{layer}.{p}"] = sd[f"b4.{layer}.{p}"]
    return fields, ours


# ----------------------------------------------------------------------------------------------------------------
# rosinality -> gan.networks


def read_rosinality(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; train.py's `args` (argparse.Namespace) is the only extra global."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message goes on to suggest loading without the safety check; name only the offending global
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"global '{m.group(1)}'" if m else str(e).splitlines()[0]
        raise ImportRefused(
            f"refusing to load {what} from {path}: a rosinality checkpoint holds only tensors, plain "
            "data and argparse.Namespace (the file may be unsafe, or not a rosinality checkpoint)"
        ) from None
    except Exception as e:
        raise ImportRefused(f"{path} could not be read as a torch checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("g_ema"), dict):
        raise ImportRefused(f"{path} has no 'g_ema' state dict (not a rosinality stylegan2-pytorch checkpoint)")
    return obj


def _rosinality_generator(g: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    keys = list(g)
    if "input.input" not in g or "conv1.conv.weight" not in g:
        raise ImportRefused("g_ema is not a rosinality StyleGAN2 generator (no input.input / conv1.conv.weight)")
    n_map = len(_block_resolutions(keys, r"style\.(\d+)\.weight"))
    n_up = len(_block_resolutions(keys, r"to_rgbs\.(\d+)\.conv\.weight"))
    res = 4 * 2**n_up
    _check_resolution(res)
    w_dim = int(g["style.1.weight"].shape[0])
    chans = {4: int(g["conv1.conv.weight"].shape[1])}
    for k in range(n_up):
        chans[8 * 2**k] = int(g[f"convs.{2 * k + 1}.conv.weight"].shape[1])
    base, cmax = _fit_channels(chans, "generator")
    if int(g["to_rgb1.conv.weight"].shape[1]) != 3:
        raise ImportRefused("only RGB generators are supported")
    fields = dict(
        resolution=res,
        z_dim=w_dim,
        w_dim=w_dim,
        mapping_layers=n_map,
        mapping_lr_mul=0.01,
        channel_base=base,
        channel_max=cmax,
        noise_max_res=1024,
        resample_mode="nvlabs",
        conv_clamp=None,
    )

    def conv(dst: str, src: str, noise: int, flip: bool) -> None:
        w = g[src + ".conv.weight"][0]  # (1, O, I, k, k) -> (O, I, k, k)
        ours[dst + ".weight"] = w.flip([2, 3]) if flip else w
        ours[dst + ".affine.weight"] = g[src + ".conv.modulation.weight"]
        ours[dst + ".affine.bias"] = g[src + ".conv.modulation.bias"]
        ours[dst + ".noise_strength"] = g[src + ".noise.weight"].reshape([])  # (1,) -> ()
        ours[dst + ".noise_const"] = g[f"noises.noise_{noise}"][0, 0]  # (1, 1, r, r) -> (r, r)
        ours[dst + ".bias"] = g[src + ".activate.bias"]

    def torgb(dst: str, src: str) -> None:
        ours[dst + ".weight"] = g[src + ".conv.weight"][0]  # (1, 3, C, 1, 1) -> (3, C, 1, 1)
        ours[dst + ".affine.weight"] = g[src + ".conv.modulation.weight"]
        ours[dst + ".affine.bias"] = g[src + ".conv.modulation.bias"]
        ours[dst + ".bias"] = g[src + ".bias"].reshape(-1)  # (1, 3, 1, 1) -> (3,)

    ours: dict[str, torch.Tensor] = {}
    for i in range(n_map):  # style.0 is the pixel norm
        ours[f"mapping_net.layers.{i}.weight"] = g[f"style.{i + 1}.weight"]
        ours[f"mapping_net.layers.{i}.bias"] = g[f"style.{i + 1}.bias"]
    ours["synthesis_net.blocks.0.const"] = g["input.input"][0]  # (1, C, 4, 4) -> (C, 4, 4)
    conv("synthesis_net.blocks.0.conv1", "conv1", 0, flip=False)
    torgb("synthesis_net.blocks.0.torgb", "to_rgb1")
    for k in range(n_up):
        dst = f"synthesis_net.blocks.{k + 1}"
        conv(dst + ".conv0", f"convs.{2 * k}", 2 * k + 1, flip=True)  # transposed conv: flip for our correlation
        conv(dst + ".conv1", f"convs.{2 * k + 1}", 2 * k + 2, flip=False)
        torgb(dst + ".torgb", f"to_rgbs.{k}")
    return fields, ours


def _rosinality_discriminator(d: dict[str, torch.Tensor], res: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    n_blocks = len(_block_resolutions(list(d), r"convs\.(\d+)\.conv1\.0\.weight"))
    if 4 * 2**n_blocks != res or "convs.0.0.weight" not in d:
        raise ImportRefused(f"discriminator does not match the generator's resolution {res}")
    chans = {res // 2**k: int(d[f"convs.{k + 1}.conv1.0.weight"].shape[0]) for k in range(n_blocks)}
    chans[4] = int(d["final_conv.0.weight"].shape[0])
    base, cmax = _fit_channels(chans, "discriminator")
    fields = dict(d_channel_base=base, d_channel_max=cmax, mbstd_group_size=4, mbstd_num_channels=1)
    ours = {"blocks.0.fromrgb.weight": d["convs.0.0.weight"], "blocks.0.fromrgb.bias": d["convs.0.1.bias"]}
    for k in range(n_blocks):
        s, t = f"convs.{k + 1}.", f"blocks.{k}."
        ours[t + "conv0.weight"], ours[t + "conv0.bias"] = d[s + "conv1.0.weight"], d[s + "conv1.1.bias"]
        ours[t + "conv1.weight"], ours[t + "conv1.bias"] = d[s + "conv2.1.weight"], d[s + "conv2.2.bias"]
        ours[t + "skip.weight"] = d[s + "skip.1.weight"]
    ours["conv.weight"], ours["conv.bias"] = d["final_conv.0.weight"], d["final_conv.1.bias"]
    ours["fc.weight"], ours["fc.bias"] = d["final_linear.0.weight"], d["final_linear.0.bias"]
    ours["out.weight"], ours["out.bias"] = d["final_linear.1.weight"], d["final_linear.1.bias"]
    return fields, ours


@torch.no_grad()
def mean_w(G: Generator, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> torch.Tensor:
    """mean of mapping(z) over n normal z, as rosinality's Generator.mean_latent (here seeded). Returns (w_dim,)."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))  # (n, z_dim)
    return G.mapping(z)[:, 0].mean(dim=0)


# ----------------------------------------------------------------------------------------------------------------
# Entry point


# torch.save's legacy (pre-1.6, non-zip) files begin with a pickled magic number (0x1950a86a20f9469cfc6c)
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def detect_format(path: str | Path) -> str:
    """'rosinality-pt' for a torch.save file, 'nvlabs-pkl' for a plain pickle (by content, not by name)."""
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_MAGIC))
    if head[:2] == b"PK" or head == _TORCH_LEGACY_MAGIC:  # torch.save's zip container, or its legacy format
        return "rosinality-pt"
    if head[:1] == b"\x80":  # pickle protocol >= 2
        return "nvlabs-pkl"
    raise ImportRefused(f"{path} is neither a network pickle nor a torch checkpoint (starts with {head!r})")


def _check_filters(sd: dict[str, torch.Tensor], what: str) -> None:
    """Every resampling filter must be StyleGAN2's [1,3,3,1] (ours is fixed); rosinality stores it scaled by 4."""
    for k, v in sd.items():
        if k.endswith(("resample_filter", ".kernel")) and not torch.allclose(v / v.sum(), fir_kernel(), atol=1e-6):
            raise ImportRefused(f"{what}: {k} is not the [1,3,3,1] filter StyleGAN2 uses; not supported")


def convert(src: str | Path) -> tuple[ModelConfig, Generator, Discriminator | None, dict[str, Any]]:
    """Read `src` safely and build our modules. Returns (config, G_ema, D or None, card fields about the source)."""
    try:
        return _convert(Path(src))
    except KeyError as e:  # a tensor the StyleGAN2 layout needs is absent
        raise ImportRefused(f"{src}: missing tensor {e} (not a StyleGAN2 network this importer knows)") from None


# What a source format yields: G's config fields, G's state, D's config fields, D's state (None: no D to import).
Parts = tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor] | None]


def _nvlabs_parts(src: Path, notes: list[str]) -> Parts:
    """(G's config fields, G's state, D's config fields, D's state or None) of a network pickle; what the card
    should say about the import is appended to `notes`."""
    data = read_nvlabs_pickle(src)
    G = data.get("G_ema")
    if not isinstance(G, PersistentStub):
        raise ImportRefused(f"{src} has no G_ema network")
    _check_filters(G.tensors(), "generator")
    g_fields, g_sd = _nvlabs_generator(G)
    d_fields: dict[str, Any] = {}
    d_sd: dict[str, torch.Tensor] | None = None
    D = data.get("D")
    if isinstance(D, PersistentStub):
        _check_filters(D.tensors(), "discriminator")
        d_fields, d_sd = _nvlabs_discriminator(D, g_fields["resolution"])
        if d_fields.pop("conv_clamp") != g_fields["conv_clamp"]:
            notes.append("D not imported: its conv_clamp differs from G's (one setting holds both here)")
            d_sd = None
    kw = {**G.init_kwargs, **(G.init_kwargs.get("synthesis_kwargs") or {})}  # stylegan3 passes them at the top
    if kw.get("num_fp16_res"):
        notes.append(
            "the source ran its highest resolutions in fp16; imported weights run in fp32 (differs by ~1/255)"
        )
    return g_fields, g_sd, d_fields, d_sd


def _rosinality_parts(ck: dict[str, Any]) -> Parts:
    """(G's config fields, G's state, D's config fields, D's state or None) of a rosinality checkpoint."""
    _check_filters(ck["g_ema"], "generator")
    g_fields, g_sd = _rosinality_generator(ck["g_ema"])
    d_fields: dict[str, Any] = {}
    d_sd: dict[str, torch.Tensor] | None = None
    if isinstance(ck.get("d"), dict):
        _check_filters(ck["d"], "discriminator")
        d_fields, d_sd = _rosinality_discriminator(ck["d"], g_fields["resolution"])
    return g_fields, g_sd, d_fields, d_sd


def _rosinality_w_avg(G_ema: Generator, ck: dict[str, Any]) -> str:
    """Give G_ema the w_avg of a rosinality checkpoint: its latent_avg, or for train.py checkpoints (which store no
    mean) the mean that rosinality's generate.py computes. Returns the card's note on where it came from."""
    if isinstance(ck.get("latent_avg"), torch.Tensor):
        G_ema.mapping_net.w_avg.copy_(ck["latent_avg"].reshape(-1).float())
        return "the file's latent_avg (converted from NVlabs' dlatent_avg)"
    G_ema.mapping_net.w_avg.copy_(mean_w(G_ema))
    return (
        f"computed at import as rosinality's generate.py does: mean of mapping(z) over "
        f"{W_AVG_SAMPLES} normal z (torch.Generator seed {W_AVG_SEED}); the file stores no mean"
    )


def _convert(src: Path) -> tuple[ModelConfig, Generator, Discriminator | None, dict[str, Any]]:
    fmt = detect_format(src)
    notes: list[str] = []
    w_avg_note = "the source's tracked w_avg"
    if fmt == "nvlabs-pkl":
        g_fields, g_sd, d_fields, d_sd = _nvlabs_parts(src, notes)
    else:
        ck = read_rosinality(src)
        g_fields, g_sd, d_fields, d_sd = _rosinality_parts(ck)
    cfg = ModelConfig(**{**g_fields, **d_fields})
    G_ema = Generator(cfg)
    if "mapping_net.w_avg" not in g_sd:
        g_sd["mapping_net.w_avg"] = torch.zeros(cfg.w_dim)
    _load_into(G_ema, g_sd, "generator")
    if fmt == "rosinality-pt":
        w_avg_note = _rosinality_w_avg(G_ema, ck)
    D_mod = None
    if d_sd is not None:
        D_mod = Discriminator(cfg)
        _load_into(D_mod, d_sd, "discriminator")
    else:
        notes.append("no discriminator imported (fine-tuning needs one)")
    G_ema.eval().requires_grad_(False)
    notes.insert(
        0,
        "runs with resample_mode 'nvlabs' (NVlabs' transposed up-conv and strided down-conv arithmetic); "
        "the up-sampling conv kernels are stored flipped, in gan.networks' correlation orientation",
    )
    info = {"format": fmt, "w_avg": w_avg_note, "notes": notes, "discriminator": D_mod is not None}
    return cfg, G_ema, D_mod, info


def import_checkpoint(src: str | Path, out: str | Path, name: str | None = None, license: str | None = None) -> Path:
    """Convert a StyleGAN2 network (NVlabs .pkl or rosinality .pt) once into a GAN Studio checkpoint + JSON card.

    The card records the source file's sha256 and format, the name and the licence the user states. Raises
    ImportRefused for unsafe, unsupported or foreign files; nothing in the source file is executed.
    """
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise ImportRefused(f"source file not found: {src}")
    sha = file_sha256(src)
    cfg, G_ema, D, info = convert(src)
    meta = {
        "name": name or src.stem,
        "license": license or "unknown (not stated at import)",
        "dataset": None,
        "default_noise_mode": "const",
        "source": {"file": src.name, "sha256": sha, "bytes": src.stat().st_size, "format": info["format"]},
        "imported": {
            "w_avg": info["w_avg"],
            "notes": info["notes"],
            "discriminator": info["discriminator"],
            "resample_mode": cfg.resample_mode,
            "conv_clamp": cfg.conv_clamp,
        },
        "contents": "G_ema" + (" and D" if D is not None else "") + ", imported, float32",
        "torch": torch.__version__,
        "parent": None,
    }
    return save_checkpoint(out, cfg, G_ema, None, D, meta=meta, write_card=True)
