"""Data-parallel training on the CPU: 2 gloo processes against one process with the whole batch."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from gan.distributed import Distributed
from gan.run_state import new_or_resume
from gan.training import TrainState, train
from tests.conftest import make_discs, tiny_model_cfg, tiny_train_cfg


def _model_cfg():
    # Equivalence of 2 x B/2 and 1 x B holds exactly only for what does not mix samples across ranks: no noise
    # inputs (per-rank RNG) and a minibatch-std group of 1 (groups of 4 would regroup the samples).
    return dataclasses.replace(tiny_model_cfg(), noise_max_res=2, mbstd_group_size=1)


def _train_cfg(**kw):
    # Augmentation off (its randoms are per rank); style mixing, R1 and EMA on: they must match too.
    return tiny_train_cfg(**{**dict(batch=8, augment="none", r1_interval=1, r1_gamma=1.0, lr_g=1e-3, lr_d=1e-3), **kw})


def _params(st: TrainState) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (st.G, st.D, st.G_ema) for p in m.parameters()]


def _grads(st: TrainState) -> list[torch.Tensor]:
    """The (all-reduced) gradients of the last step, which stay in .grad until the next phase zeroes them."""
    return [p.grad.clone() for p in st.g_params + st.d_params]


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        dist = Distributed(rank=rank, world_size=world)
        ds = make_discs()
        st = TrainState(_model_cfg(), _train_cfg(steps=1), dist=dist)
        assert st.batches.batch_local == 4 and st.sync_free
        st.train_step(ds)  # one step with 4 images on each rank
        if rank == 0:
            torch.save((_params(st), _grads(st)), Path(out) / "one_step.pt")
        st2 = TrainState(_model_cfg(), _train_cfg(steps=2), dist=dist)
        events = list(train(st2, ds, run_dir=Path(out) / f"run{rank}"))  # every rank is given a folder
        assert events[-1].kind == "done" and events[-1].step == 2
        if rank == 0:
            torch.save(_params(st2), Path(out) / "two_steps.pt")
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(_worker, args=(2, str(out / "store"), str(out)), nprocs=2, join=True)
    return out


def test_two_ranks_make_the_same_update_as_one_process_with_the_whole_batch(two_ranks):
    torch.set_num_threads(1)
    st = TrainState(_model_cfg(), _train_cfg(steps=1))
    before = _params(st)
    st.train_step(make_discs())
    (one, grads), (two, grads_two) = (_params(st), _grads(st)), torch.load(two_ranks / "one_step.pt")
    for a, b in zip(grads, grads_two):  # the mean over 2 x 4 images is the mean over 8 (up to summation order)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    moved = max(float((a - b).abs().max()) for a, b in zip(one, before))
    assert moved > 5e-4  # Adam moved the weights by about lr
    # Adam's first step is lr * g / (|g| + eps): where g is within rounding of 0 its sign may differ (at most 2 lr);
    # everywhere else the update is the same
    diff = torch.cat([(a - b).abs().flatten() for a, b in zip(one, two)])
    assert float(diff.max()) <= 2.1e-3 and float((diff > 2e-5).float().mean()) < 0.01


def test_rank_zero_alone_writes_and_a_two_rank_state_resumes_on_one(two_ranks, tmp_path):
    assert (two_ranks / "run0" / "state.safetensors").exists() and (two_ranks / "run0" / "log.jsonl").exists()
    assert not (two_ranks / "run1").exists()  # rank 1 wrote nothing at all
    torch.set_num_threads(1)
    ds = make_discs()
    resumed = new_or_resume(two_ranks / "run0", _model_cfg(), _train_cfg(steps=4), "cpu", resume=True)
    assert resumed.step == 2 and resumed.nimg == 16 and resumed.dist.world_size == 1
    for a, b in zip(_params(resumed), torch.load(two_ranks / "two_steps.pt")):
        assert torch.equal(a, b)
    list(train(resumed, ds, run_dir=two_ranks / "run0"))
    straight = TrainState(_model_cfg(), _train_cfg(steps=4))  # the same data stream whatever the number of ranks
    list(train(straight, ds))
    assert resumed.step == 4
    diff = torch.cat([(a - b).abs().flatten() for a, b in zip(_params(resumed), _params(straight))])
    assert float((diff > 1e-4).float().mean()) < 0.01  # the same run (see above for the few Adam sign flips)
