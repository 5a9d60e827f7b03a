"""GAN Studio web app: layout and event wiring only; the work is done in gan/studio.py.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected)
"""
from __future__ import annotations

import os
import random
import threading

import gradio as gr
import numpy as np
import torch

from gan import studio
from gan.checkpoint import CheckpointError
from gan.dataset import DatasetError, load_images
from gan.defaults import default_noise_mode, pick_device
from gan.latent import parse_seeds
from gan.sets import list_sets, load_set
from gan.spaces_compat import gpu

DEVICE = pick_device(os.environ.get("GAN_DEVICE") or None)
if DEVICE.type == "cpu" and os.environ.get("GAN_THREADS"):
    torch.set_num_threads(int(os.environ["GAN_THREADS"]))
STORE = studio.ModelStore(os.environ.get("GAN_CHECKPOINT") or None, device=DEVICE)
STOP_FLAGS: dict[str, threading.Event] = {}
N = studio.NUM_SLIDERS

CSS = """
#explore-image img { width: 320px !important; height: 320px !important; max-width: none !important; max-height: none !important; object-fit: contain; image-rendering: pixelated; }
#ft-grid img, #ft-compare img, #interp-strip img, #interp-gif img { image-rendering: pixelated; }
"""


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _state(seed, psi, noise_mode, method, layer_start, layer_end, coeffs, mix_seed, mix_start, mix_end, source="seed") -> studio.ExploreState:
    return studio.ExploreState(
        source=source or "seed", seed=int(seed or 0), psi=float(psi), noise_mode=noise_mode, method=method, layer_start=int(layer_start),
        layer_end=int(layer_end), coeffs=[float(c) for c in coeffs], mix_seed=int(mix_seed or 0),
        mix_start=int(mix_start), mix_end=int(mix_end),
    )


# ---- Explore handlers ---------------------------------------------------------------------------------------------


@gpu(duration=20)
def generate(seed: int = 0, psi: float = 0.7, noise_mode: str = "const", method: str = "sefa", layer_start: int = 0,
             layer_end: int = 10, c0: float = 0.0, c1: float = 0.0, c2: float = 0.0, c3: float = 0.0, c4: float = 0.0,
             c5: float = 0.0, mix_seed: int = 1, mix_start: int = 0, mix_end: int = 0, source: str = "seed",
             request: gr.Request = None) -> np.ndarray:
    """Render one image for a seed (or the inverted upload), truncation psi, noise mode, direction sliders and
    style mixing."""
    session = _session(request)
    try:
        st = _state(seed, psi, noise_mode, method, layer_start, layer_end, [c0, c1, c2, c3, c4, c5], mix_seed,
                    mix_start, mix_end, source)
        return studio.render_explore(STORE.get(session), st, STORE.get_projection(session))
    except (ValueError, TypeError) as e:
        raise gr.Error(f"bad parameters: {e}") from None


def share(seed, psi, noise_mode, method, layer_start, layer_end, c0, c1, c2, c3, c4, c5, mix_seed, mix_start, mix_end,
          source="seed", request: gr.Request = None):
    """Shareable link and JSON of the current explore state."""
    try:
        st = _state(seed, psi, noise_mode, method, layer_start, layer_end, [c0, c1, c2, c3, c4, c5], mix_seed,
                    mix_start, mix_end, source)
        st.validate(STORE.get(_session(request)).num_ws)
    except (ValueError, TypeError):
        return gr.update(), gr.update()
    host = request.headers.get("host") if request is not None else None
    proto = request.headers.get("x-forwarded-proto", "http") if request is not None else "http"
    return (f"{proto}://{host}/" if host else "") + "?" + st.to_query(), st.to_json()


def directions_changed(method: str, request: gr.Request = None):
    labels = studio.slider_labels(STORE.get(_session(request)), method)
    return [gr.Slider(label=labels[i]) for i in range(N)]


def reset_sliders():
    return [0.0] * N


def random_seed() -> int:
    return random.randrange(0, 100_000)


def restore(params: dict[str, str], request: gr.Request | None) -> list:
    """Values for every explore control from query params (page load) or JSON; raises ValueError."""
    model = STORE.get(_session(request))
    default = studio.ExploreState(noise_mode=default_noise_mode(model.checkpoint.meta), layer_end=model.num_ws)
    st = studio.ExploreState.from_query(params, default).validate(model.num_ws)
    labels = studio.slider_labels(model, st.method)
    return [st.seed, st.psi, st.noise_mode, st.method, st.layer_start, st.layer_end,
            *[gr.Slider(value=c, label=labels[i]) for i, c in enumerate(st.coeffs)], st.mix_seed, st.mix_start, st.mix_end,
            st.source]


def on_load(request: gr.Request):
    STORE.prune()
    params = dict(request.query_params) if request is not None else {}
    model = STORE.get(_session(request))
    try:
        values = restore(params, request)
    except ValueError as e:
        gr.Warning(f"Ignoring the link's parameters: {e}")
        values = restore({}, request)
    return [*values, model_banner(model)]


def import_json(text: str, request: gr.Request = None):
    try:
        st = studio.ExploreState.from_json(text)
        params = dict(item.split("=", 1) for item in st.to_query().split("&"))
        values = restore(params, request)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    values[-1] = st.source if st.source == "image" and STORE.get_projection(_session(request)) else "seed"
    return values


@gpu(duration=120)
def invert(image_path: str | None, steps: int = 150, wplus_steps: int = 100, request: gr.Request = None):
    """Invert an uploaded image; streams (status, loss curve, current reconstruction), then switches Explore to it."""
    if not image_path:
        raise gr.Error("upload an image to invert")
    session = _session(request)
    model = STORE.get(session)
    stop = STOP_FLAGS[session + ":invert"] = threading.Event()
    losses: list[float] = []
    try:
        for ev in studio.invert_image(model, image_path, int(steps), int(wplus_steps), stop):
            losses.append(ev.loss)
            if ev.done:
                STORE.set_projection(session, ev.ws, model)
                yield (f"done: {ev.step} steps, PSNR {ev.psnr:.1f} dB. Explore now edits your image (source: inverted image).",
                       studio.curve_figure(losses, "inversion loss", "loss"), ev.image, "image", 1.0)
            elif ev.image is not None:
                yield (f"step {ev.step}/{int(steps) + int(wplus_steps)} ({ev.phase}) · PSNR {ev.psnr:.1f} dB",
                       studio.curve_figure(losses, "inversion loss", "loss"), ev.image, gr.update(), gr.update())
    except (ValueError, TypeError, DatasetError) as e:
        raise gr.Error(str(e)) from None


def stop_invert(request: gr.Request = None) -> str:
    flag = STOP_FLAGS.get(_session(request) + ":invert")
    if flag:
        flag.set()
    return "stopping…"


def model_banner(model: studio.LoadedModel) -> str:
    meta = model.checkpoint.meta
    kimg = (meta.get("nimg") or 0) / 1000
    return f"**Model:** {model.label} · {meta.get('dataset', '?')} · {kimg:.0f}k images seen · device `{DEVICE.type}`"


# ---- Interpolate --------------------------------------------------------------------------------------------------


@gpu(duration=60)
def interpolate(seeds: str = "1,2,3", frames_per_segment: int = 16, method: str = "slerp", space: str = "z",
                loop: bool = True, psi: float = 0.7, noise_mode: str = "const", fps: float = 12.0,
                request: gr.Request = None):
    """Walk through keyframe seeds; returns a frame strip, the GIF and an MP4 (or WebP) file."""
    try:
        anim = studio.make_animation(STORE.get(_session(request)), parse_seeds(seeds, max_count=studio.MAX_KEYFRAMES),
                                     int(frames_per_segment), method, space, bool(loop), float(psi), noise_mode,
                                     float(fps), studio.new_workdir("interp"))
    except (ValueError, TypeError) as e:
        raise gr.Error(str(e)) from None
    return anim.strip, str(anim.gif), str(anim.video)


# ---- Fine-tune ----------------------------------------------------------------------------------------------------


@gpu(duration=300)
def finetune(data_source: str = "bundled set", bundled: str = "sketch-faces", uploads: list | None = None,
             steps: int = 150, lr: float = 0.0008, augment: str = "ada", freeze_mapping: bool = True,
             freeze_d_blocks: int = 1, mirror: bool = False, request: gr.Request = None):
    """Fine-tune the current model; streams (status, loss plot, sample grid, before/after, checkpoint file)."""
    session = _session(request)
    base = STORE.get(session)
    try:
        if data_source == "upload":
            if not uploads:
                raise ValueError("upload some images (or a zip) first, or choose a bundled set")
            paths = [getattr(f, "name", f) for f in uploads]
            ds = load_images(paths, size=base.checkpoint.model_cfg.resolution, name="uploads", min_images=2)
            if ds.skipped:
                gr.Warning(f"skipped {len(ds.skipped)} file(s): " + "; ".join(ds.skipped[:3]))
        else:
            ds = load_set(bundled, size=base.checkpoint.model_cfg.resolution)
        cfg = studio.finetune_config(int(steps), float(lr), augment, freeze_mapping, int(freeze_d_blocks), len(ds),
                                     xflip=mirror)
    except (ValueError, TypeError, DatasetError) as e:
        raise gr.Error(str(e)) from None
    stop = STOP_FLAGS[session] = threading.Event()
    out_dir = studio.new_workdir("finetune")
    yield f"queued → running on {len(ds)} images", None, None, None, None, None
    last = None
    for i, up in enumerate(studio.run_finetune(base, ds, cfg, stop, out_dir, device=DEVICE)):
        last = up
        if up.done:
            break
        if i % 2 == 0 or up.grid is not None:
            yield up.status, studio.loss_figure(up.history), up.grid, None, None, None
    if last is None or last.checkpoint is None:
        raise gr.Error("fine-tuning produced no checkpoint")
    tuned = STORE.load(last.checkpoint, "fine-tuned")
    compare = studio.before_after(base, tuned)
    if last.error:
        gr.Warning(last.error)
    yield last.status, studio.loss_figure(last.history), last.grid, compare, str(last.checkpoint), str(last.checkpoint)


def stop_finetune(request: gr.Request = None) -> str:
    flag = STOP_FLAGS.get(_session(request))
    if flag is None:
        return "nothing is running"
    flag.set()
    return "stopping after the current step…"


def explore_finetuned(path: str | None, request: gr.Request = None):
    if not path:
        raise gr.Error("run a fine-tune first")
    try:
        model = STORE.use_checkpoint(_session(request), path, "your fine-tuned model")
    except CheckpointError as e:
        raise gr.Error(str(e)) from None
    return model_banner(model), gr.Tabs(selected="explore")


def back_to_shipped(request: gr.Request = None):
    STORE.reset(_session(request))
    return model_banner(STORE.base)


def on_unload(request: gr.Request):
    STORE.forget(_session(request))
    STOP_FLAGS.pop(_session(request), None)
    STOP_FLAGS.pop(_session(request) + ":invert", None)


# ---- Layout -------------------------------------------------------------------------------------------------------


def build_demo() -> gr.Blocks:
    num_ws = STORE.base.num_ws
    labels = studio.slider_labels(STORE.base, "sefa")
    with gr.Blocks(title="GAN Studio") as demo:
        gr.Markdown("# GAN Studio\nExplore, interpolate and fine-tune a StyleGAN2 trained on Noto Color Emoji.")
        banner = gr.Markdown(model_banner(STORE.base), elem_id="model-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        source = gr.Radio([("Seed", "seed"), ("Inverted image", "image")], value="seed", label="Start from",
                                          elem_id="source")
                        with gr.Row():
                            seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=2**32 - 1, elem_id="seed")
                            rnd = gr.Button("🎲 Random", elem_id="random-seed", scale=0)
                        psi = gr.Slider(0.0, 1.5, 0.7, step=0.05, label="Truncation ψ (1 = none)", elem_id="psi")
                        noise = gr.Radio(["const", "random", "none"], value=default_noise_mode(STORE.base.checkpoint.meta),
                                         label="Noise mode (per-pixel noise inputs: fixed, fresh, or off)")
                        with gr.Accordion("Latent directions", open=True):
                            method = gr.Radio([("SeFa (closed form)", "sefa"), ("GANSpace (PCA of W)", "ganspace")],
                                              value="sefa", label="Method", elem_id="method")
                            with gr.Row():
                                layer_start = gr.Slider(0, num_ws, 0, step=1, label="Edit from layer")
                                layer_end = gr.Slider(0, num_ws, num_ws, step=1, label="to layer (exclusive; all = W, part = W+)")
                            sliders = [gr.Slider(-studio.SLIDER_RANGE, studio.SLIDER_RANGE, 0.0, step=0.1, label=labels[i],
                                                 elem_id=f"dir{i}") for i in range(N)]
                            reset = gr.Button("Reset sliders", size="sm")
                        with gr.Accordion("Style mixing", open=False):
                            mix_seed = gr.Number(1, label="Second seed", precision=0, minimum=0, maximum=2**32 - 1)
                            with gr.Row():
                                mix_start = gr.Slider(0, num_ws, 0, step=1, label="Take its layers from")
                                mix_end = gr.Slider(0, num_ws, 0, step=1, label="to (exclusive; empty = off)")
                    with gr.Column(scale=1, min_width=300):
                        image = gr.Image(label="Generated", format="png", height=320, width=320, elem_id="explore-image",
                                         interactive=False, buttons=["download"])
                        link = gr.Textbox(label="Shareable link", elem_id="share-link", buttons=["copy"])
                        with gr.Accordion("Invert your image", open=False):
                            inv_image = gr.Image(type="filepath", label="Image to invert", sources=["upload", "clipboard"],
                                                 elem_id="invert-upload")
                            with gr.Row():
                                inv_steps = gr.Slider(10, 500, 150, step=10, label="Steps in W")
                                inv_wplus = gr.Slider(0, 500, 100, step=10, label="then steps in W+ (0 = stay in W)")
                            with gr.Row():
                                inv_go = gr.Button("Invert", variant="primary", elem_id="invert-go")
                                inv_stop = gr.Button("Stop", variant="stop", size="sm")
                            inv_status = gr.Markdown("", elem_id="invert-status")
                            with gr.Row():
                                inv_plot = gr.Plot(label="Loss", elem_id="invert-plot")
                                inv_frame = gr.Image(label="Reconstruction", format="png", interactive=False, elem_id="invert-frame")
                        with gr.Accordion("State as JSON (export / import)", open=False):
                            state_json = gr.Code(language="json", label="Explore state", elem_id="state-json")
                            json_in = gr.Textbox(label="Paste a state JSON", lines=3)
                            json_apply = gr.Button("Apply JSON", size="sm")

            with gr.Tab("Interpolate", id="interpolate"):
                with gr.Row():
                    with gr.Column(min_width=300):
                        keys = gr.Textbox("1,2,3,4", label="Keyframe seeds (comma-separated)", elem_id="keyframes")
                        fps_seg = gr.Slider(2, 60, 16, step=1, label="Frames per segment")
                        with gr.Row():
                            i_method = gr.Radio(["slerp", "lerp"], value="slerp", label="Interpolation")
                            i_space = gr.Radio([("Z", "z"), ("W", "w")], value="w", label="Space")
                        i_loop = gr.Checkbox(True, label="Loop back to the first seed")
                        i_psi = gr.Slider(0.0, 1.5, 0.7, step=0.05, label="Truncation ψ")
                        i_fps = gr.Slider(1, 30, 12, step=1, label="Frames per second")
                        i_go = gr.Button("Make animation", variant="primary", elem_id="interp-go")
                    with gr.Column(min_width=300):
                        strip = gr.Image(label="Frames", format="png", interactive=False, elem_id="interp-strip")
                        gif = gr.Image(label="GIF", type="filepath", interactive=False, elem_id="interp-gif")
                        video_file = gr.File(label="Video (MP4, or WebP without ffmpeg)", elem_id="interp-video")

            with gr.Tab("Fine-tune", id="finetune"):
                sets = list_sets()
                with gr.Row():
                    with gr.Column(min_width=320):
                        ft_source = gr.Radio(["bundled set", "upload"], value="bundled set", label="Data", elem_id="ft-source")
                        bundled = gr.Dropdown([(f"{k}: {v}", k) for k, v in sets.items()], value="sketch-faces" if "sketch-faces" in sets else None,
                                              label="Bundled set")
                        uploads = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Your images (PNG/JPEG/WebP or a zip)",
                                          elem_id="ft-upload")
                        # Short runs barely move KID to the target (on the 2,296k model it first rose for ~60 steps
                        # while D learned the new set); by 150 steps it is clearly lower (docs/benchmarks.md).
                        steps = gr.Slider(5, 500, 150, step=5, label="Steps (batch 8)", elem_id="ft-steps")
                        with gr.Accordion("Options", open=False):
                            lr = gr.Number(0.0008, label="Learning rate (G and D)")
                            augment = gr.Radio(["ada", "fixed", "none"], value="ada", label="Augmentation (DiffAugment; ada adapts p)")
                            freeze_mapping = gr.Checkbox(True, label="Freeze mapping network")
                            freeze_d = gr.Slider(0, 3, 1, step=1, label="Freeze highest-resolution D blocks (FreezeD)")
                            mirror = gr.Checkbox(False, label="Also train on left-right mirrored copies (for subjects that may face either way)")
                        with gr.Row():
                            start = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")
                            stop = gr.Button("Stop", variant="stop", elem_id="ft-stop")
                        status = gr.Markdown("", elem_id="ft-status")
                    with gr.Column(min_width=320):
                        plot = gr.Plot(label="Loss curves", elem_id="ft-plot")
                        ft_grid = gr.Image(label="Fixed-seed samples (live)", format="png", interactive=False, elem_id="ft-grid")
                compare = gr.Image(label="Before (top) / after (bottom), same seeds", format="png", interactive=False, elem_id="ft-compare")
                with gr.Row():
                    download = gr.File(label="Fine-tuned checkpoint (safetensors + card)", elem_id="ft-download")
                    with gr.Column():
                        explore_btn = gr.Button("Explore this model", elem_id="ft-explore")
                        back_btn = gr.Button("Back to the shipped model", elem_id="ft-back")
                last_ckpt = gr.State(None)

        # ---- wiring ----
        explore_inputs = [seed, psi, noise, method, layer_start, layer_end, *sliders, mix_seed, mix_start, mix_end, source]
        restore_outputs = [seed, psi, noise, method, layer_start, layer_end, *sliders, mix_seed, mix_start, mix_end, source]

        def wire_generate(trigger, **kw):
            ev = trigger(generate, explore_inputs, image, show_progress="hidden", **kw)
            ev.then(share, explore_inputs, [link, state_json], api_visibility="private", queue=False)
            return ev

        wire_generate(seed.submit, api_name="generate", trigger_mode="always_last")
        seed.input(generate, explore_inputs, image, api_visibility="private", trigger_mode="always_last").then(
            share, explore_inputs, [link, state_json], api_visibility="private", queue=False)
        for s in (psi, layer_start, layer_end, *sliders, mix_start, mix_end):
            wire_generate(s.release, api_visibility="private", trigger_mode="always_last")  # pointer up: image + link
            s.input(generate, explore_inputs, image, api_visibility="private", trigger_mode="always_last",
                    show_progress="hidden")  # drag, keys
        for c in (noise, mix_seed, source):
            wire_generate(c.change, api_visibility="private", trigger_mode="always_last")
        rnd.click(random_seed, None, seed, api_visibility="private", queue=False).then(
            generate, explore_inputs, image, api_visibility="private").then(share, explore_inputs, [link, state_json], api_visibility="private", queue=False)
        method.change(directions_changed, method, sliders, api_visibility="private").then(
            generate, explore_inputs, image, api_visibility="private")
        reset.click(reset_sliders, None, sliders, api_visibility="private", queue=False).then(
            generate, explore_inputs, image, api_visibility="private").then(share, explore_inputs, [link, state_json], api_visibility="private", queue=False)
        json_apply.click(import_json, json_in, restore_outputs, api_visibility="private").then(
            generate, explore_inputs, image, api_visibility="private").then(share, explore_inputs, [link, state_json], api_visibility="private", queue=False)

        inv_go.click(invert, [inv_image, inv_steps, inv_wplus], [inv_status, inv_plot, inv_frame, source, psi],
                     api_name="invert", concurrency_id="train", concurrency_limit=1).then(
            generate, explore_inputs, image, api_visibility="private").then(
            share, explore_inputs, [link, state_json], api_visibility="private", queue=False)
        inv_stop.click(stop_invert, None, inv_status, api_visibility="private", queue=False)
        i_go.click(interpolate, [keys, fps_seg, i_method, i_space, i_loop, i_psi, noise, i_fps], [strip, gif, video_file],
                   api_name="interpolate", concurrency_id="render", concurrency_limit=2)

        start.click(finetune, [ft_source, bundled, uploads, steps, lr, augment, freeze_mapping, freeze_d, mirror],
                         [status, plot, ft_grid, compare, download, last_ckpt], api_name="finetune",
                         concurrency_id="train", concurrency_limit=1)
        stop.click(stop_finetune, None, status, api_visibility="private", queue=False)
        explore_btn.click(explore_finetuned, last_ckpt, [banner, tabs], api_visibility="private").then(
            directions_changed, method, sliders, api_visibility="private").then(
            generate, explore_inputs, image, api_visibility="private")
        back_btn.click(back_to_shipped, None, banner, api_visibility="private").then(
            directions_changed, method, sliders, api_visibility="private").then(
            generate, explore_inputs, image, api_visibility="private")

        demo.load(on_load, None, [*restore_outputs, banner], api_visibility="private").then(
            generate, explore_inputs, image, api_visibility="private").then(share, explore_inputs, [link, state_json], api_visibility="private", queue=False)
        demo.unload(on_unload)
    return demo


demo = build_demo()
demo.queue(max_size=64, default_concurrency_limit=4)

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="50mb",
        css=CSS,
    )

