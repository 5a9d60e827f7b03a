"""Importing StyleGAN2 weights: faithful output against the reference implementations, and safe reading.

The fixtures (tests/import_fixtures.py) are built from the documented key layouts with seeded random weights; the
reference images and D logits in tests/data/import_*.npz were rendered once from the same weights by NVlabs'
stylegan2-ada-pytorch and rosinality's stylegan2-pytorch on the CPU (their reference ops); see
tests/data/import_README.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.checkpoint import load_checkpoint
from gan.config import ModelConfig, from_dict, to_dict
from gan.importer import ImportRefused, import_checkpoint
from gan.io import file_sha256
from gan.latent import render, seeds_to_ws
from gan.networks import Discriminator, Generator
from tests import import_fixtures as fx

DATA = Path(__file__).parent / "data"
MAX_LEVELS = 2  # of 255: what "renders the same" allows (float summation order differs between implementations)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """name -> (source path, checkpoint path) for every fixture in fx.SPECS, imported once per test module."""
    folder = tmp_path_factory.mktemp("import")
    out = {}
    for name in fx.SPECS:
        src = fx.write_fixture(name, folder)
        out[name] = (
            src,
            import_checkpoint(src, folder / f"{name}.safetensors", name=f"test {name}", license="CC0-1.0"),
        )
    return out


def _render(G: Generator, res: int, psi: float) -> np.ndarray:
    ix = fx.ref_index(res)
    return render(G, seeds_to_ws(G, fx.REF_SEEDS[res], psi=psi))[:, ix][:, :, ix]  # (S, len(ix), len(ix), 3)


def _levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("name", list(fx.SPECS))
def test_imported_model_renders_what_the_reference_renders(imported, name):
    spec = fx.SPECS[name]
    ck = load_checkpoint(imported[name][1])
    ref = np.load(DATA / f"import_{name}.npz")
    for psi in fx.REF_PSIS:
        ours = _render(ck.G_ema, spec["res"], psi)
        assert ours.shape == ref[f"psi{psi}"].shape
        assert _levels(ours, ref[f"psi{psi}"]) <= MAX_LEVELS, f"{name} psi {psi}"
    if "d_logits" in ref:
        with torch.no_grad():
            logits = ck.D(fx.d_inputs(spec["res"])).numpy()  # (4, 1)
        np.testing.assert_allclose(logits, ref["d_logits"], rtol=1e-4, atol=1e-5)
    else:
        assert ck.D is None


def test_card_records_source_format_name_and_licence(imported):
    for name, (src, out) in imported.items():
        card = json.loads(out.with_suffix(".json").read_text())
        assert card["source"]["sha256"] == file_sha256(src)
        assert card["source"]["format"] == ("nvlabs-pkl" if name.startswith("nv") else "rosinality-pt")
        assert card["name"] == f"test {name}" and card["license"] == "CC0-1.0"
        assert card["model"]["resample_mode"] == "nvlabs"
    ros_train = json.loads(imported["ros64"][1].with_suffix(".json").read_text())
    assert "4096" in ros_train["imported"]["w_avg"] and "stores no mean" in ros_train["imported"]["w_avg"]
    ros_conv = load_checkpoint(imported["ros256"][1])
    assert torch.equal(ros_conv.G_ema.w_avg, fx.rosinality_latent_avg(fx.SPECS["ros256"]))
    assert "latent_avg" in ros_conv.meta["imported"]["w_avg"]
    assert load_checkpoint(imported["nv64"][1]).model_cfg.conv_clamp == 0.6


def test_each_import_transform_is_needed(imported):
    """Without the kernel flip, NVlabs' border handling or the clamp, the 64 px model would not match."""
    ck = load_checkpoint(imported["nv64"][1])
    ref = np.load(DATA / "import_nv64.npz")["psi1.0"]
    sd = ck.G_ema.state_dict()

    def variant(sd, **cfg_changes) -> np.ndarray:
        G = Generator(dataclasses.replace(ck.model_cfg, **cfg_changes))
        G.load_state_dict(sd)
        return _render(G.eval(), 64, 1.0)

    assert _levels(variant(sd), ref) <= MAX_LEVELS
    unflipped = {k: v.flip([2, 3]) if k.endswith("conv0.weight") else v for k, v in sd.items()}
    assert _levels(variant(unflipped), ref) > 10
    assert _levels(variant(sd, resample_mode="studio"), ref) > MAX_LEVELS  # differs at the borders
    assert _levels(variant(sd, conv_clamp=None), ref) > 10  # the fixture's clamp really clips
    # D: blur + decimate, then conv at half resolution is a different operation from NVlabs' strided conv
    D = Discriminator(dataclasses.replace(ck.model_cfg, resample_mode="studio"))
    D.load_state_dict(ck.D.state_dict())
    with torch.no_grad():
        logits = D(fx.d_inputs(64)).numpy()  # (4, 1)
    assert np.abs(logits - np.load(DATA / "import_nv64.npz")["d_logits"]).max() > 1e-2


def test_old_configs_load_with_todays_behaviour():
    d = to_dict(ModelConfig())
    old = {k: v for k, v in d.items() if k not in ("conv_clamp", "resample_mode")}  # a checkpoint from before
    cfg = from_dict(ModelConfig, old)
    assert cfg.conv_clamp is None and cfg.resample_mode == "studio"
    with pytest.raises(ValueError, match="resample_mode"):
        ModelConfig(resample_mode="tf")


def test_variants_of_the_nvlabs_pickle(tmp_path):
    spec = dict(fx.SPECS["nv64"], res=16, conv_clamp=None)
    bare = fx.write_nvlabs_pickle(tmp_path / "bare.pkl", spec, bare=True)
    ck = load_checkpoint(import_checkpoint(bare, tmp_path / "bare.safetensors"))
    assert ck.D is None and ck.model_cfg.resolution == 16 and ck.meta["name"] == "bare"
    assert "unknown" in ck.meta["license"]
    sg3 = fx.write_nvlabs_pickle(tmp_path / "sg3order.pkl", spec, order="sg3")
    ck2 = load_checkpoint(import_checkpoint(sg3, tmp_path / "sg3order.safetensors"))
    assert ck2.D is not None
    for k, v in ck.G_ema.state_dict().items():
        assert torch.equal(v, ck2.G_ema.state_dict()[k]), k


@pytest.mark.parametrize("protocol", [2, 3])
def test_older_pickles_with_numpy_core_names(tmp_path, protocol):
    """Python 3.7-era pickles (protocol 3; 2 pickles bytes via _codecs) written with NumPy 1.x (numpy.core...)."""
    spec = dict(fx.SPECS["nv64"], res=16)
    path = fx.write_nvlabs_pickle(tmp_path / "old.pkl", spec, protocol=protocol)
    blob = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\nscalar" in blob  # the text GLOBAL opcode of old pickles
    path.write_bytes(blob)
    ck = load_checkpoint(import_checkpoint(path, tmp_path / "old.safetensors"))
    assert torch.equal(ck.G_ema.w_avg, fx.nvlabs_g_tensors(spec)["mapping.w_avg"])


# ----------------------------------------------------------------------------------------------------------------
# Refusals and safety


def test_unsupported_networks_are_refused_clearly(tmp_path):
    spec = dict(fx.SPECS["nv64"], res=16)
    with pytest.raises(ImportRefused, match="StyleGAN3"):
        import_checkpoint(fx.write_sg3_like_pickle(tmp_path / "sg3t.pkl"), tmp_path / "x.safetensors")
    cond = fx.write_nvlabs_pickle(
        tmp_path / "cond.pkl",
        spec,
        g_kwargs={"c_dim": 10},
        extra_g={"mapping.embed.weight": torch.zeros(32, 10), "mapping.embed.bias": torch.zeros(32)},
    )
    with pytest.raises(ImportRefused, match="labels are not supported"):
        import_checkpoint(cond, tmp_path / "x.safetensors")
    resnet_g = fx.write_nvlabs_pickle(
        tmp_path / "resnet.pkl", spec, g_attrs={"SynthesisBlock": {"architecture": "resnet"}}
    )
    with pytest.raises(ImportRefused, match="architecture 'resnet'"):
        import_checkpoint(resnet_g, tmp_path / "x.safetensors")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ImportRefused, match="neither"):
        import_checkpoint(junk, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


class _RunsCode:
    """Unpickling this calls os.system (a classic malicious pickle)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _RunsCode(marker)}))
    with pytest.raises(ImportRefused, match=r"refusing to load global '(posix|nt|os)\.system'"):
        import_checkpoint(evil, tmp_path / "x.safetensors")
    assert not marker.exists()
    evil2 = tmp_path / "evil2.pkl"
    evil2.write_bytes(b"\x80\x04cbuiltins\nexec\n(V" + f"open({str(marker)!r}, 'w')".encode() + b"\ntR.")
    with pytest.raises(ImportRefused, match="builtins.exec"):
        import_checkpoint(evil2, tmp_path / "x.safetensors")
    assert not marker.exists()


def test_embedded_module_source_is_never_run(tmp_path):
    marker = tmp_path / "module_src_ran"
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    path = fx.write_nvlabs_pickle(tmp_path / "net.pkl", dict(fx.SPECS["nv64"], res=16), module_src=src)

    # The real torch_utils.persistence execs module_src while unpickling; emulating that proves the fixture is armed.
    def exec_like_nvlabs(meta):
        exec(meta["module_src"], {})  # noqa: S102 - the behaviour under test

    with fx.fake_nvlabs_modules(reconstruct=exec_like_nvlabs):
        pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    ck = load_checkpoint(import_checkpoint(path, tmp_path / "net.safetensors"))
    assert ck.model_cfg.resolution == 16
    assert not marker.exists()


def test_rosinality_file_with_a_foreign_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    spec = dict(fx.SPECS["ros64"], res=16)
    path = tmp_path / "evil.pt"
    torch.save(
        {"g_ema": fx.rosinality_g_tensors(spec), "latent_avg": torch.zeros(32), "extra": _RunsCode(marker)}, path
    )
    with pytest.raises(ImportRefused, match=r"refusing to load global '(posix|nt|os)\.system'") as e:
        import_checkpoint(path, tmp_path / "x.safetensors")
    assert "weights_only=False" not in str(e.value)  # never suggest the unsafe way out
    assert not marker.exists()


def test_rosinality_legacy_torch_save_format(tmp_path):
    spec = dict(fx.SPECS["ros256"], res=16)
    new = fx.write_rosinality(tmp_path / "new.pt", spec)
    old = tmp_path / "old.pt"
    torch.save(torch.load(new, weights_only=True), old, _use_new_zipfile_serialization=False)  # pre-1.6 files
    a = load_checkpoint(import_checkpoint(new, tmp_path / "a.safetensors")).G_ema.state_dict()
    b = load_checkpoint(import_checkpoint(old, tmp_path / "b.safetensors")).G_ema.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_import_then_generate(tmp_path, capsys):
    from PIL import Image

    from gan.cli import main

    src = fx.write_rosinality(tmp_path / "ros.pt", dict(fx.SPECS["ros256"], res=16))
    out = tmp_path / "ckpt" / "mine.safetensors"
    main(["import", str(src), "--out", str(out), "--name", "mine", "--license", "CC-BY-4.0"])
    assert "imported" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["name"] == "mine" and card["license"] == "CC-BY-4.0" and card["source"]["format"] == "rosinality-pt"
    main(["generate", "--checkpoint", str(out), "--seeds", "0-3", "--out", str(tmp_path / "g.png")])
    assert Image.open(tmp_path / "g.png").size == (32, 32)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_RunsCode(tmp_path / "pwned")))
    with pytest.raises(SystemExit) as e:
        main(["import", str(evil), "--out", str(tmp_path / "e.safetensors")])
    assert e.value.code == 2 and "refusing to load global" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
