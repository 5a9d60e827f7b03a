"""Run a Gradio script (the app, by default) on a free local port and drive Debian's Chromium with Playwright.

Shared by the browser tests, the UI latency benchmark and the screenshots, so all three start the app the way a
new user does (`python app.py`) and launch the same browser with the same flags (no browser download).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Headless as root, without the background connections this machine's closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(script: tuple[str, ...] = ("app.py",), env: dict[str, str] | None = None, log: IO | None = None,
          timeout_s: float = 120, cwd: Path | None = None,
          procs: list[subprocess.Popen] | None = None) -> Iterator[tuple[str, float]]:
    """Start `python SCRIPT` on a free port (in `cwd`, default this checkout); yield (its URL, seconds until it
    answered); stop it afterwards. `procs` gets the server's process (for benchmarks that read its CPU time)."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {}),
           "GRADIO_SERVER_PORT": str(port)}
    t0 = time.perf_counter()
    out = log or subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, *script], cwd=cwd or ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if procs is not None:
        procs.append(proc)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                urllib.request.urlopen(url + "gradio_api/info", timeout=5)
                break
            except urllib.error.HTTPError:
                break  # the server answers
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{' '.join(script)} exited with code {proc.returncode}") from None
                if time.perf_counter() - t0 > timeout_s:
                    raise TimeoutError(f"{' '.join(script)} did not answer within {timeout_s:.0f} s") from None
                time.sleep(0.1)
        yield url, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright's Python package."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
