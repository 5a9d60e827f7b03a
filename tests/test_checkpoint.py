import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from gan.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from gan.networks import Discriminator, Generator
from tests.conftest import tiny_model_cfg


@pytest.fixture
def nets(model_cfg):
    torch.manual_seed(1)
    return Generator(model_cfg), Generator(model_cfg), Discriminator(model_cfg)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_bit_exact(nets, model_cfg, tmp_path):
    G_ema, G, D = nets
    path = save_checkpoint(tmp_path / "c.safetensors", model_cfg, G_ema, G, D, meta={"nimg": 123, "dataset": "discs"}, write_card=True)
    ck = load_checkpoint(path)
    assert _same(ck.G_ema, G_ema) and _same(ck.G, G) and _same(ck.D, D)
    assert ck.meta["nimg"] == 123 and ck.model_cfg == model_cfg
    assert len(ck.sha256) == 64
    card = json.loads((tmp_path / "c.json").read_text())
    assert card["dataset"] == "discs" and card["model"]["resolution"] == 16
    z = torch.randn(2, model_cfg.z_dim)
    assert torch.equal(ck.G_ema(z), G_ema(z))


def test_fp16_storage_loads_back_as_exact_fp32_of_fp16(nets, model_cfg, tmp_path):
    G_ema, _, _ = nets
    path = save_checkpoint(tmp_path / "h.safetensors", model_cfg, G_ema, dtype=torch.float16)
    ck = load_checkpoint(path)
    for k, v in ck.G_ema.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, G_ema.state_dict()[k].half().float()), k
    assert ck.meta["storage_dtype"] == "float16"


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file(nets, model_cfg, tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", model_cfg, nets[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_checkpoint(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(path)


def test_foreign_safetensors_and_pickles_are_refused(tmp_path):
    p = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(p))
    with pytest.raises(CheckpointError, match="not a GAN Studio checkpoint"):
        load_checkpoint(p)
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps({"G": 1}))
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(p)
    p = tmp_path / "random.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_wrong_shapes_are_named(nets, model_cfg, tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", model_cfg, nets[0])
    # Rewrite the metadata to claim a wider model: every conv weight then has the wrong shape.
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    meta = read_metadata(path)
    meta["model"]["channel_max"] = 64
    meta["model"]["channel_base"] = 512
    save_file(tensors, str(path), metadata={"gan_studio": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(path)


def test_need_d(nets, model_cfg, tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", model_cfg, nets[0])
    with pytest.raises(CheckpointError, match="discriminator"):
        load_checkpoint(path, need_d=True)


def test_atomic_write_leaves_no_temp_files(nets, model_cfg, tmp_path):
    for _ in range(2):
        save_checkpoint(tmp_path / "c.safetensors", model_cfg, nets[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_other_resolution_config_loads(tmp_path):
    cfg = tiny_model_cfg(8)
    G = Generator(cfg)
    ck = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", cfg, G))
    assert ck.model_cfg.resolution == 8
