"""The non-finite guard and the step statistics: "saved weights are always the last good ones".

Statistics (losses, D scores, ADA's sign) are summed on the device and read once per log step, so a GPU step never
waits. The guard has two forms:
  * host guard (the CPU): each phase's loss is read before its optimizer step, which costs nothing on a CPU, and a
    non-finite loss stops the run before the weights change (`check_phase`);
  * device guard (`sync_free`, CUDA or several ranks): the summed losses are checked at every log step, and the whole
    state (weights, Adam, buffers, p, counters) is rolled back to an in-memory copy taken at the previous good check.
    Rolling back keeps the contract exactly (a run that diverged stops, with the last good weights saved) at the
    price of a device-to-device copy per log step and at most `log_every` steps of lost work. SG2-ADA instead
    replaces non-finite gradients by zeros (`nan_to_num`), which never stops a diverged run and would save weights
    trained on garbage: that breaks the contract, so it is not used.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

STAT_KEYS = ("loss_G", "loss_D", "D_real", "D_fake", "sign_real", "r1", "cdc")  # statistics summed on the device
GUARDED_KEYS = ("loss_G", "loss_D", "r1")  # the losses whose value decides whether a step is good


class StepStats:
    """Sums of each statistic since the last read, on the device, and how many steps each sum holds (host)."""

    def __init__(self, device: torch.device):
        self.sums = {k: torch.zeros([], device=device) for k in STAT_KEYS}
        self.counts = dict.fromkeys(STAT_KEYS, 0)

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.sums[k] += v
            self.counts[k] += 1

    def vector(self) -> torch.Tensor:
        """(len(STAT_KEYS),) the sums, to read (or all-reduce) in one go."""
        return torch.stack([self.sums[k] for k in STAT_KEYS])

    def means(self, host_sums: list[float], world_size: int = 1) -> dict[str, float]:
        """The means of a read vector of sums (over ranks too), then start a new window."""
        out = {k: host_sums[i] / (self.counts[k] * world_size) for i, k in enumerate(STAT_KEYS) if self.counts[k]}
        for t in self.sums.values():
            t.zero_()
        self.counts = dict.fromkeys(STAT_KEYS, 0)
        return out


def check_phase(stats: dict[str, torch.Tensor], what: str, step: int) -> None:
    """Host guard: FloatingPointError when a phase's loss is non-finite (read before its optimizer step)."""
    for k in GUARDED_KEYS:
        if k in stats and not math.isfinite(v := float(stats[k])):
            raise FloatingPointError(f"{what} loss is {v} at step {step}")


def non_finite(means: dict[str, float]) -> str | None:
    """'loss_D nan, ...' for the non-finite means of a window; None when all are finite."""
    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
    return ", ".join(f"{k} {v}" for k, v in bad.items()) if bad else None


class RollbackGuard:
    """The device guard's in-memory copy of every tensor a step changes, taken at the last good check.

    `tensors` returns the live state by stable names (state_dict tensors share storage with the modules); the copy
    is refreshed with one foreach copy on the device, and restored in place.
    """

    def __init__(self, tensors: Callable[[], dict[str, torch.Tensor]]):
        self._tensors = tensors
        self.good: dict[str, torch.Tensor] | None = None
        self.step = self.nimg = 0

    def snapshot(self, step: int, nimg: int) -> None:
        cur = self._tensors()
        if self.good is not None and self.good.keys() == cur.keys():
            torch._foreach_copy_(list(self.good.values()), list(cur.values()))  # device-to-device
        else:
            self.good = {k: v.detach().clone() for k, v in cur.items()}
        self.step, self.nimg = step, nimg

    def restore(self) -> set[str]:
        """Copy the good state back in place; return the names of live tensors the copy does not have (state born
        after it, e.g. Adam moments created by the first step), for the owner to drop."""
        assert self.good is not None, "restore() before any snapshot()"
        cur = self._tensors()
        with torch.no_grad():
            for k, v in self.good.items():
                cur[k].copy_(v)
        return set(cur) - set(self.good)
