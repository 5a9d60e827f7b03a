"""The app without the model: every control, event and output of app.py, but the Explore render returns a pattern
made from the seed (as bench/bare_app.py does) instead of a synthesis. bench.load and bench.scrub serve it beside
the real app: what Gradio's event path costs this app's page before any model work, the floor under any render
path.

    python -m bench.floor_app   (GRADIO_SERVER_PORT picks the port)
"""
from __future__ import annotations

import os

import gradio as gr
import numpy as np

import app
from studio.explore import ExploreState


def pattern(seed: int) -> np.ndarray:
    """A 64x64 RGB image as detailed as a generated emoji, a new one for every seed (bench/bare_app.py's)."""
    rng = np.random.RandomState(int(seed or 0) + 1000)
    return np.kron(rng.randint(0, 255, (16, 16, 3)), np.ones((4, 4, 1))).astype(np.uint8)


def draw(self: app.Handlers, values: list, request: gr.Request | None) -> tuple[ExploreState, np.ndarray]:
    """Handlers._draw without the model: the state parsed as the app parses it, and a pattern image."""
    try:
        st = ExploreState.from_values(values)
    except (ValueError, TypeError) as e:
        raise gr.Error(f"bad parameters: {e}") from None
    return st, pattern(st.seed)


if __name__ == "__main__":
    app.Handlers._draw = draw
    app.create_app().launch(server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7871")),
                            css=app.CSS)
