"""Fixture files for the importer tests, built from the documented key layouts with seeded random weights.

No third-party code: an NVlabs network pickle is emulated with fake `torch_utils.persistence` and `dnnlib.util`
modules that exist only while the pickle is written, so the file has the globals and the structure a real one has
(a `_reconstruct_persistent_obj` record per module holding class name, module source and state; tensors through
torch's storage rebuilds; numpy scalars; EasyDict constructor arguments). Layouts follow design-notes section 10.

The reference outputs in tests/data/ were rendered once from exactly these weights by the real NVlabs and
rosinality code on the CPU (see tests/data/import_README.md); `SPECS` names the fixtures they belong to.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

# name -> fixture parameters. channels(r) = min(base // r, cmax), as both reference implementations allow.
SPECS: dict[str, dict[str, Any]] = {
    # 64 px, z_dim != w_dim, 3 mapping layers, a conv_clamp small enough to clip most layers
    "nv64": dict(fmt="nvlabs", res=64, z_dim=24, w_dim=32, n_map=3, base=256, cmax=32, conv_clamp=0.6, seed=1),
    "nv256": dict(fmt="nvlabs", res=256, z_dim=16, w_dim=16, n_map=2, base=512, cmax=16, conv_clamp=None, seed=2),
    # rosinality train.py layout (no latent mean stored) and converted layout (g_ema + latent_avg)
    "ros64": dict(
        fmt="rosinality-train", res=64, z_dim=32, w_dim=32, n_map=2, base=256, cmax=32, conv_clamp=None, seed=3
    ),
    "ros256": dict(
        fmt="rosinality-converted", res=256, z_dim=16, w_dim=16, n_map=2, base=512, cmax=16, conv_clamp=None, seed=4
    ),
}
REF_SEEDS = {64: [0, 1, 2, 3], 256: [0, 1]}  # seeds of the stored reference images per resolution
REF_PSIS = (1.0, 0.7)


def ref_index(res: int) -> np.ndarray:
    """Rows (and columns) of the stored reference pixels: all of them up to 64 px; above, every 4th plus the 4 at
    each border (where resampling conventions differ), which keeps tests/data small."""
    if res <= 64:
        return np.arange(res)
    return np.array(sorted(set(range(0, res, 4)) | set(range(4)) | set(range(res - 4, res))))


D_SEED = 123  # D inputs: RandomState(D_SEED).randn(4, 3, R, R)


def channels(spec: dict[str, Any], r: int) -> int:
    return min(spec["base"] // r, spec["cmax"])


def fir() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(f, f) / 64  # (4, 4), sums to 1


class _Rand:
    """Seeded normal tensors; every fixture value is drawn in key order, so a spec always gives the same file."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, *shape: int, scale: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=self.g) * scale + mean


# ----------------------------------------------------------------------------------------------------------------
# Flat tensors in each source's naming


def nvlabs_g_tensors(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    rnd, w, R = _Rand(spec["seed"]), spec["w_dim"], spec["res"]
    t: dict[str, torch.Tensor] = {}
    dims = [spec["z_dim"]] + [w] * spec["n_map"]
    for i in range(spec["n_map"]):
        t[f"mapping.fc{i}.weight"] = rnd(dims[i + 1], dims[i], scale=100.0)  # stored / lr_multiplier (0.01)
        t[f"mapping.fc{i}.bias"] = rnd(dims[i + 1], scale=10.0)
    t["mapping.w_avg"] = rnd(w, scale=0.5)
    r = 4
    while r <= R:
        c, cin = channels(spec, r), channels(spec, r // 2)
        p = f"synthesis.b{r}."
        if r == 4:
            t[p + "const"] = rnd(c, 4, 4)
        for conv, ci in (("conv1", c),) if r == 4 else (("conv0", cin), ("conv1", c)):
            t[f"{p}{conv}.weight"] = rnd(c, ci, 3, 3)
            t[f"{p}{conv}.bias"] = rnd(c, scale=0.2)
            t[f"{p}{conv}.noise_strength"] = rnd(scale=0.3)
            t[f"{p}{conv}.noise_const"] = rnd(r, r)
            t[f"{p}{conv}.resample_filter"] = fir()
            t[f"{p}{conv}.affine.weight"] = rnd(ci, w)
            t[f"{p}{conv}.affine.bias"] = rnd(ci, scale=0.2, mean=1.0)
        t[p + "torgb.weight"] = rnd(3, c, 1, 1, scale=0.2)  # keeps most pixels unsaturated
        t[p + "torgb.bias"] = rnd(3, scale=0.2)
        t[p + "torgb.affine.weight"] = rnd(c, w)
        t[p + "torgb.affine.bias"] = rnd(c, scale=0.2, mean=1.0)
        t[p + "resample_filter"] = fir()
        r *= 2
    return t


def nvlabs_d_tensors(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    rnd, R = _Rand(spec["seed"] + 1000), spec["res"]
    t: dict[str, torch.Tensor] = {}
    r = R
    while r > 4:
        c, co = channels(spec, r), channels(spec, r // 2)
        p = f"b{r}."
        if r == R:
            t[p + "fromrgb.weight"], t[p + "fromrgb.bias"] = rnd(c, 3, 1, 1), rnd(c, scale=0.2)
            t[p + "fromrgb.resample_filter"] = fir()  # every NVlabs Conv2dLayer registers one
        t[p + "conv0.weight"], t[p + "conv0.bias"] = rnd(c, c, 3, 3), rnd(c, scale=0.2)
        t[p + "conv0.resample_filter"] = fir()
        t[p + "conv1.weight"], t[p + "conv1.bias"] = rnd(co, c, 3, 3), rnd(co, scale=0.2)
        t[p + "conv1.resample_filter"] = fir()
        t[p + "skip.weight"], t[p + "skip.resample_filter"] = rnd(co, c, 1, 1), fir()
        t[p + "resample_filter"] = fir()
        r //= 2
    c4 = channels(spec, 4)
    t["b4.conv.weight"], t["b4.conv.bias"] = rnd(c4, c4 + 1, 3, 3), rnd(c4, scale=0.2)
    t["b4.conv.resample_filter"] = fir()
    t["b4.fc.weight"], t["b4.fc.bias"] = rnd(c4, c4 * 16), rnd(c4, scale=0.2)
    t["b4.out.weight"], t["b4.out.bias"] = rnd(1, c4), rnd(1, scale=0.2)
    return t


def rosinality_g_tensors(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    rnd, w, R = _Rand(spec["seed"]), spec["w_dim"], spec["res"]
    t: dict[str, torch.Tensor] = {}
    for i in range(spec["n_map"]):  # style.0 is the PixelNorm
        t[f"style.{i + 1}.weight"], t[f"style.{i + 1}.bias"] = rnd(w, w, scale=100.0), rnd(w, scale=10.0)
    c4 = channels(spec, 4)
    t["input.input"] = rnd(1, c4, 4, 4)

    def styled(p: str, c: int, ci: int, up: bool) -> None:
        t[p + "conv.weight"] = rnd(1, c, ci, 3, 3)
        if up:
            t[p + "conv.blur.kernel"] = fir() * 4
        t[p + "conv.modulation.weight"], t[p + "conv.modulation.bias"] = rnd(ci, w), rnd(ci, scale=0.2, mean=1.0)
        t[p + "noise.weight"] = rnd(1, scale=0.3)
        t[p + "activate.bias"] = rnd(c, scale=0.2)

    def to_rgb(p: str, c: int, up: bool) -> None:
        if up:
            t[p + "upsample.kernel"] = fir() * 4
        t[p + "conv.weight"] = rnd(1, 3, c, 1, 1, scale=0.2)  # keeps most pixels unsaturated
        t[p + "conv.modulation.weight"], t[p + "conv.modulation.bias"] = rnd(c, w), rnd(c, scale=0.2, mean=1.0)
        t[p + "bias"] = rnd(1, 3, 1, 1, scale=0.2)

    styled("conv1.", c4, c4, False)
    to_rgb("to_rgb1.", c4, False)
    r, k = 8, 0
    while r <= R:
        c, cin = channels(spec, r), channels(spec, r // 2)
        styled(f"convs.{2 * k}.", c, cin, True)
        styled(f"convs.{2 * k + 1}.", c, c, False)
        to_rgb(f"to_rgbs.{k}.", c, True)
        r, k = r * 2, k + 1
    n_layers = 2 * (int(np.log2(R)) - 2) + 1
    for i in range(n_layers):
        r = 2 ** ((i + 5) // 2)
        t[f"noises.noise_{i}"] = rnd(1, 1, r, r)
    return t


def rosinality_d_tensors(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    rnd, R = _Rand(spec["seed"] + 1000), spec["res"]
    t = {"convs.0.0.weight": rnd(channels(spec, R), 3, 1, 1), "convs.0.1.bias": rnd(channels(spec, R), scale=0.2)}
    r, k = R, 1
    while r > 4:
        c, co, p = channels(spec, r), channels(spec, r // 2), f"convs.{k}."
        t[p + "conv1.0.weight"], t[p + "conv1.1.bias"] = rnd(c, c, 3, 3), rnd(c, scale=0.2)
        t[p + "conv2.0.kernel"] = fir()
        t[p + "conv2.1.weight"], t[p + "conv2.2.bias"] = rnd(co, c, 3, 3), rnd(co, scale=0.2)
        t[p + "skip.0.kernel"], t[p + "skip.1.weight"] = fir(), rnd(co, c, 1, 1)
        r, k = r // 2, k + 1
    c4 = channels(spec, 4)
    t["final_conv.0.weight"], t["final_conv.1.bias"] = rnd(c4, c4 + 1, 3, 3), rnd(c4, scale=0.2)
    t["final_linear.0.weight"], t["final_linear.0.bias"] = rnd(c4, c4 * 16), rnd(c4, scale=0.2)
    t["final_linear.1.weight"], t["final_linear.1.bias"] = rnd(1, c4), rnd(1, scale=0.2)
    return t


def rosinality_latent_avg(spec: dict[str, Any]) -> torch.Tensor:
    return _Rand(spec["seed"] + 2000)(spec["w_dim"], scale=0.5)


# ----------------------------------------------------------------------------------------------------------------
# NVlabs persistence emulation


@contextlib.contextmanager
def fake_nvlabs_modules(reconstruct=None) -> Iterator[types.ModuleType]:
    """Temporarily register `torch_utils.persistence` and `dnnlib.util` so objects pickle under those names.

    `reconstruct` replaces the reconstruct function (a test uses one that execs module_src as the real one does).
    """
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, dnu = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # what a pickle names; never called while writing
        raise RuntimeError("fixture module: not for loading")

    fn = reconstruct or _reconstruct_persistent_obj
    fn.__module__, fn.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = fn
    pkg.persistence = mod

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    dnu.EasyDict = EasyDict
    dn.util = dnu
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod, "dnnlib": dn, "dnnlib.util": dnu})
    try:
        yield mod
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Persistent:
    """Pickles exactly as a torch_utils.persistence object: (_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, class_name: str, state: dict[str, Any], module_src: str = "# networks.py\n"):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        fn = sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return fn, (meta,)


BUFFERS = ("w_avg", "noise_const", "resample_filter")


def _class_name(path: str, top: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return top
    if last == "mapping":
        return "MappingNetwork"
    if last == "synthesis":
        return "SynthesisNetwork"
    if last.startswith("fc") or last in ("affine", "out"):
        return "FullyConnectedLayer"
    if last == "torgb":
        return "ToRGBLayer"
    if last == "b4" and top == "Discriminator":
        return "DiscriminatorEpilogue"
    if last.startswith("b"):
        return "SynthesisBlock" if top == "Generator" else "DiscriminatorBlock"
    if top == "Generator" and last.startswith(("conv", "L")):
        return "SynthesisLayer"
    if last == "mbstd":
        return "MinibatchStdLayer"
    return "Conv2dLayer"


def persistent_tree(
    flat: dict[str, torch.Tensor],
    top: str,
    init_kwargs: dict[str, Any],
    attrs: dict[str, dict[str, Any]],
    module_src: str = "# networks.py\n",
) -> Persistent:
    """Nest flat NVlabs-named tensors into persistent modules with nn.Module-like state dicts.

    `attrs` adds plain attributes to modules whose class name is the key (e.g. conv_clamp of every SynthesisLayer).
    """
    EasyDict = sys.modules["dnnlib.util"].EasyDict
    paths = {""}
    for k in flat:
        parts = k.split(".")[:-1]
        paths.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    if top == "Discriminator":
        paths.add("b4.mbstd")
    nodes: dict[str, Persistent] = {}
    for path in sorted(paths, key=lambda p: -(p.count(".") + bool(p))):  # children first, the root ("") last
        cls = _class_name(path, top)
        od = collections.OrderedDict
        state: dict[str, Any] = {
            "training": False,
            "_parameters": od(),
            "_buffers": od(),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": od(),
            "_forward_hooks": od(),
            "_forward_pre_hooks": od(),
            "_state_dict_hooks": od(),
            "_load_state_dict_pre_hooks": od(),
            "_modules": od(),
        }
        prefix = path + "." if path else ""
        for k, v in flat.items():
            if k.startswith(prefix) and "." not in k[len(prefix) :]:
                name = k[len(prefix) :]
                if name in BUFFERS:
                    state["_buffers"][name] = v.clone()
                else:
                    state["_parameters"][name] = torch.nn.Parameter(v.clone(), requires_grad=False)
        for child in sorted(p for p in paths if p.startswith(prefix) and p != path and "." not in p[len(prefix) :]):
            state["_modules"][child[len(prefix) :]] = nodes[child]
        state.update(attrs.get(cls, {}))
        if cls == "FullyConnectedLayer":
            lr = 0.01 if path.startswith("mapping") else 1.0
            fan_in = flat[prefix + "weight"].shape[1]
            state.update(activation="lrelu", weight_gain=lr / np.sqrt(fan_in), bias_gain=lr)  # numpy float64, as real
        if cls == "ToRGBLayer":
            state["weight_gain"] = 1 / np.sqrt(flat[prefix + "weight"].shape[1])
        state["_init_args"] = ()
        state["_init_kwargs"] = EasyDict(init_kwargs) if path == "" else EasyDict()
        nodes[path] = Persistent(cls, state, module_src)
    return nodes[""]


def write_nvlabs_pickle(
    path: str | Path,
    spec: dict[str, Any],
    with_d: bool = True,
    bare: bool = False,
    order: str = "ada",
    module_src: str = "# networks.py\n",
    extra_g: dict[str, torch.Tensor] | None = None,
    g_attrs: dict[str, dict[str, Any]] | None = None,
    g_kwargs: dict[str, Any] | None = None,
    protocol: int | None = None,
) -> Path:
    """A network pickle for `spec`: a snapshot dict (stylegan2-ada order 'ada' or stylegan3 order 'sg3') or a bare G.

    `protocol` 3 is what stylegan2-ada-pytorch's Python 3.7 wrote (text GLOBAL opcodes, no frames); default: 4+.
    """
    clamp = spec["conv_clamp"]
    with fake_nvlabs_modules():
        EasyDict = sys.modules["dnnlib.util"].EasyDict
        g_flat = {**nvlabs_g_tensors(spec), **(extra_g or {})}
        # stylegan3's stylegan2 config leaves conv_clamp out of init_kwargs; the layers' state holds it either way
        syn = EasyDict(channel_base=spec["base"], channel_max=spec["cmax"], num_fp16_res=4)
        G_kw = EasyDict(
            z_dim=spec["z_dim"],
            c_dim=0,
            w_dim=spec["w_dim"],
            img_resolution=spec["res"],
            img_channels=3,
            mapping_kwargs=EasyDict(num_layers=spec["n_map"]),
            synthesis_kwargs=syn,
        )
        G_kw.update(g_kwargs or {})
        attrs = {
            "SynthesisLayer": dict(conv_clamp=clamp, up=1, use_noise=True, padding=1, act_gain=float(np.sqrt(2))),
            "ToRGBLayer": dict(conv_clamp=clamp),
            "SynthesisBlock": dict(architecture="skip"),
            **(g_attrs or {}),
        }
        G = persistent_tree(g_flat, "Generator", G_kw, attrs, module_src)
        if bare:
            data: Any = G
        else:
            D = None
            if with_d:
                D_kw = EasyDict(
                    c_dim=0,
                    img_resolution=spec["res"],
                    img_channels=3,
                    channel_base=spec["base"],
                    channel_max=spec["cmax"],
                    conv_clamp=clamp,
                )
                d_attrs = {
                    "Conv2dLayer": dict(conv_clamp=clamp),
                    "DiscriminatorBlock": dict(architecture="resnet"),
                    "DiscriminatorEpilogue": dict(architecture="resnet"),
                    "MinibatchStdLayer": dict(group_size=4, num_channels=1),
                }
                D = persistent_tree(nvlabs_d_tensors(spec), "Discriminator", D_kw, d_attrs, module_src)
                # NVlabs builds the skip without conv_clamp
                for blk in D.state["_modules"].values():
                    if "skip" in blk.state["_modules"]:
                        blk.state["_modules"]["skip"].state["conv_clamp"] = None
            aug = Persistent(
                "AugmentPipe",
                {
                    "_parameters": collections.OrderedDict(),
                    "_buffers": collections.OrderedDict(p=torch.zeros([])),
                    "_modules": collections.OrderedDict(),
                    "xflip": 1.0,
                    "_init_kwargs": EasyDict(xflip=1),
                },
                module_src,
            )
            tsk = dict(EasyDict(path="~/datasets/x.zip", resolution=spec["res"], use_labels=False))
            parts = dict(G=G, D=D, G_ema=G, augment_pipe=aug)
            if order == "ada":  # stylegan2-ada-pytorch: training_set_kwargs first
                data = dict(training_set_kwargs=tsk, **parts)
            else:  # stylegan3
                data = dict(**parts, training_set_kwargs=tsk)
            if not with_d:
                data.pop("D")
        blob = pickle.dumps(data, protocol=protocol)
    Path(path).write_bytes(blob)
    return Path(path)


def write_rosinality(path: str | Path, spec: dict[str, Any]) -> Path:
    g = rosinality_g_tensors(spec)
    if spec["fmt"] == "rosinality-train":
        d = rosinality_d_tensors(spec)
        ck = {
            "g": {k: v + 0.01 for k, v in g.items()},
            "d": d,
            "g_ema": g,
            "g_optim": {"state": {}, "param_groups": []},
            "d_optim": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(
                size=spec["res"], latent=spec["w_dim"], n_mlp=spec["n_map"], channel_multiplier=2
            ),
        }
    else:
        ck = {"g_ema": g, "latent_avg": rosinality_latent_avg(spec)}
    torch.save(ck, path)
    return Path(path)


def write_fixture(name: str, folder: str | Path) -> Path:
    spec = SPECS[name]
    if spec["fmt"] == "nvlabs":
        return write_nvlabs_pickle(Path(folder) / f"{name}.pkl", spec, order="ada" if name.endswith("64") else "sg3")
    return write_rosinality(Path(folder) / f"{name}.pt", spec)


def d_inputs(res: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(D_SEED).randn(4, 3, res, res)).float()  # (4, 3, R, R)


def write_sg3_like_pickle(path: str | Path) -> Path:
    """A StyleGAN3-T-like snapshot (class 'Generator' too): mapping + synthesis.input + L{i}_{size}_{ch} layers."""
    rnd = _Rand(7)
    flat = {
        "mapping.fc0.weight": rnd(16, 16),
        "mapping.fc0.bias": rnd(16),
        "mapping.w_avg": rnd(16),
        "synthesis.input.weight": rnd(8, 8),
        "synthesis.input.affine.weight": rnd(4, 16),
        "synthesis.input.affine.bias": rnd(4),
        "synthesis.input.freqs": rnd(8, 2),
        "synthesis.input.phases": rnd(8),
    }
    for i, (size, ch) in enumerate([(36, 8), (36, 8), (20, 3)]):
        p = f"synthesis.L{i}_{size}_{ch}."
        flat.update(
            {
                p + "weight": rnd(ch, 8, 3, 3),
                p + "bias": rnd(ch),
                p + "affine.weight": rnd(8, 16),
                p + "affine.bias": rnd(8),
            }
        )
    with fake_nvlabs_modules():
        EasyDict = sys.modules["dnnlib.util"].EasyDict
        G = persistent_tree(
            flat, "Generator", EasyDict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3), {}
        )
        blob = pickle.dumps({"G": G, "D": None, "G_ema": G, "augment_pipe": None, "training_set_kwargs": {}})
    Path(path).write_bytes(blob)
    return Path(path)
