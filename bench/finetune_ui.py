"""Server cost of one live fine-tune update: the curve table as Gradio sends it (gr.LinePlot postprocess), sent
every step, and the sample grid as a PNG (gr.Image postprocess), sent when re-rendered; after 50 and 1,000 steps.

    python -m bench.finetune_ui
"""
from __future__ import annotations

import tempfile

import numpy as np

from bench.common import p50, save_result, timeit
from gan.images import to_uint8_grid, upscale
from gan.latent import z_from_seeds
from gan.resolve import resolve_checkpoint
from studio import media


def main() -> None:
    import gradio as gr

    plot = gr.LinePlot(x="step", y="value", color="series")
    image = gr.Image(format="png")
    rng = np.random.default_rng(0)
    ck = resolve_checkpoint(None)
    z = z_from_seeds(list(media.PREVIEW_SEEDS), ck.model_cfg.z_dim)
    grid = upscale(to_uint8_grid(ck.G_ema(z, psi=1.0), cols=8), 2)  # what the app sends: 8 samples, 2x
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        image.GRADIO_CACHE = tmp
        for steps in (50, 1000):
            history = [{"step": i, "loss_G": 1.0 + rng.random(), "loss_D": 1.0 + rng.random()} for i in range(1, steps + 1)]
            curves = p50(timeit(lambda: plot.postprocess(media.curves_frame(history)), repeat=20))
            png = p50(timeit(lambda: image.postprocess(grid), repeat=20))
            # Every step sends the curves; the grid goes out only when it was re-rendered (every 3 s).
            res[f"{steps}_steps"] = {"curves_ms": round(curves * 1000, 2), "grid_png_ms": round(png * 1000, 2)}
    print(save_result("finetune-ui", res).read_text())


if __name__ == "__main__":
    main()
