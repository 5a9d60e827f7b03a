"""The app as it was at an earlier commit, for benchmarks that compare today's server with a change side by side
on the same machine, in the same run (the load of a shared machine moves between runs).

    with checkout("cae3301") as root: serve(cwd=root) ...
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.common import ROOT


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """The tracked files of commit `ref` in a temporary folder (git archive; checkpoints linked, not copied)."""
    with tempfile.TemporaryDirectory(prefix="gan-baseline-") as tmp:
        files = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split("\n")
        keep = [f for f in files if f and not f.startswith("checkpoints/")]
        archive = subprocess.run(["git", "archive", ref, "--", *keep], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        os.symlink(ROOT / "checkpoints", Path(tmp) / "checkpoints")
        yield Path(tmp)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The machine's 1/5/15-minute load averages, as `uptime` prints them (recorded beside every figure)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
