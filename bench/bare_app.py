"""The floor of bench/ui_latency.py and bench/scrub.py: a bare Gradio app whose slider and seed box return a same-size
(64x64) PNG."""
import os

import gradio as gr
import numpy as np


def render(v: float) -> np.ndarray:
    """A 64x64 RGB image with as much detail as a generated emoji (the app sends 64 px and upscales in CSS)."""
    rng = np.random.RandomState(int((v + 3) * 10))
    return np.kron(rng.randint(0, 255, (16, 16, 3)), np.ones((4, 4, 1))).astype(np.uint8)


def from_seed(seed: float) -> np.ndarray:
    rng = np.random.RandomState(int(seed or 0) + 1000)  # its own stream: every seed a new image
    return np.kron(rng.randint(0, 255, (16, 16, 3)), np.ones((4, 4, 1))).astype(np.uint8)


with gr.Blocks() as demo:
    seed = gr.Number(0, precision=0, elem_id="seed")
    s = gr.Slider(-3, 3, 0, step=0.1, elem_id="dir0")
    out = gr.Image(format="png", elem_id="explore-image", interactive=False)
    seed.input(from_seed, seed, out, trigger_mode="always_last")  # as the app's seed box
    s.release(render, s, out, trigger_mode="always_last")
    s.input(render, s, out, trigger_mode="always_last")
    demo.load(render, s, out)

demo.queue(max_size=64, default_concurrency_limit=4)
if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7870")))
