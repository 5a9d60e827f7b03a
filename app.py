"""GAN Studio web app: layout and event wiring only; the work is done in studio/ (services) on top of gan/ (library).

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT respected)

Environment: GAN_CHECKPOINT (the base model), GAN_CHECKPOINT_DIR (more models for the picker), GAN_DEVICE,
GAN_THREADS (CPU threads), GAN_CACHE_DIR (computed directions).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
import torch

from gan.checkpoint import CheckpointError
from gan.config import AUGMENT_MODES, D_KINDS, FINETUNE_DEFAULTS, FINETUNE_LIMITS, FINETUNE_SECONDS
from gan.dataset import DatasetError
from gan.labels import ANY
from gan.latent import parse_seeds
from gan.paths import CHECKPOINT_DIR, DEFAULT_CHECKPOINT
from gan.resolve import HUB_PREFIX, resolve_checkpoint
from gan.runtime import default_noise_mode, pick_device
from gan.sets import DEFAULT_SET, list_sets
from studio import explore, finetune, media
from studio.explore import API_FIELDS, DIRECTION_FIELDS, NUM_SLIDERS, ExploreState
from studio.finetune import DATA_SOURCES, UPLOAD_SOURCE
from studio.media import INTERPOLATE_DEFAULTS
from studio.models import LoadedModel, ModelCache, catalogue, serve
from studio.session import JobRefused, Sessions
from studio.spaces_compat import gpu
from studio.strips import LAYER_FIELDS, PSI_GRID, STRIP_FIELDS, StripCache

CSS = """
#explore-image img { max-width: none !important; max-height: none !important; object-fit: contain; }
#explore-image.small img { width: 320px !important; height: 320px !important; image-rendering: pixelated; }
#explore-image.native img { width: auto !important; height: auto !important; }
#explore-image.large img { width: 512px !important; height: 512px !important; }
#ft-grid img, #ft-compare img, #interp-strip img, #interp-gif img { image-rendering: pixelated; }
#strip-frame { position: absolute; display: none; pointer-events: none; z-index: 50; background-repeat: no-repeat;
               image-rendering: pixelated; }
#strip .strip-note { font-size: 0.85em; opacity: 0.75; min-height: 1.2em; }
"""
# The page's side of the scrub strips (a gr.HTML js_on_load; `element`, `props`, `trigger`, `watch` are Gradio's).
# While a strip slider is held, its frames are swapped in an overlay over the Explore image: no request per move.
# Staleness: a strip is shown only after the server answered the latest question, asked with the page's current
# controls at pointerdown/focus (the answer's nonce must be the latest one), and every other input, every new
# Explore image (a render may have changed the state: a seed, an inversion, another model) withdraws it until the
# server confirms again. Keyboard and number-box moves (no pointerup, so no Gradio `release`) get a pointerup
# dispatched after a short pause: the exact render, as on release.
STRIP_JS = r"""
const fields = JSON.parse(props.fields);  // strip field -> elem_id of its slider
const fieldOf = (el) => {  // the strip field whose slider (range or number box) `el` is, else null
  if (!el || !el.matches || !el.matches('input')) return null;
  for (const [f, id] of Object.entries(fields)) if (el.closest('#' + id)) return f;
  return null;
};
let nonce = 0, held = null, ready = null, active = null, pointer = false, timer = null, pendingExact = false;
const overlay = document.createElement('div');
overlay.id = 'strip-frame';
document.body.appendChild(overlay);
const setNote = (text) => { const n = element.querySelector('.strip-note'); if (n) n.textContent = text; };
const hide = () => { overlay.style.display = 'none'; };
const withdraw = () => { ready = null; if (!pendingExact) hide(); };
function show(field, value) {
  if (ready !== field || !held || held.field !== field) return;
  const i = Math.round((value - held.lo) / held.step);
  const img = document.querySelector('#explore-image img');
  if (!img || i < 0 || i >= held.count) return;
  const r = img.getBoundingClientRect();
  const s = overlay.style;
  s.left = (r.left + window.scrollX) + 'px'; s.top = (r.top + window.scrollY) + 'px';
  s.width = r.width + 'px'; s.height = r.height + 'px';
  if (overlay.dataset.key !== held.key) {
    s.backgroundImage = `url(${held.url})`; s.backgroundSize = `${held.count * 100}% 100%`;
    overlay.dataset.key = held.key;
  }
  s.backgroundPosition = `${held.count > 1 ? (i * 100) / (held.count - 1) : 0}% 0`;
  overlay.dataset.frame = String(i);
  s.display = 'block';
}
function ask(field, prefetch) {
  nonce += 1;
  ready = null;
  trigger('click', {field, nonce, have: held && held.field === field ? held.key : null, prefetch: !!prefetch});
}
const valueOf = (field) => {
  const el = document.querySelector(`#${fields[field]} input[type=range]`);
  return el ? Number(el.value) : NaN;
};
watch('value', () => {
  let r;
  try { r = JSON.parse(props.value); } catch (e) { return; }
  if (!r || r.nonce !== nonce) return;  // the answer to an older question: the state may have changed since
  if (r.off) { held = null; ready = null; hide(); setNote(r.off); return; }
  if (r.deferred) { setNote('scrub preview: waiting for a quiet moment (the server is busy)'); return; }
  const confirm = () => {
    if (r.nonce !== nonce) return;
    ready = r.field;
    setNote(`scrub preview ready: ${held.count} frames`);
    if (pointer && active === r.field) show(r.field, valueOf(r.field));
  };
  if (r.url) {
    const im = new Image();
    im.src = r.url;
    im.decode().then(() => { if (r.nonce === nonce) { held = r; confirm(); } }, () => {});
  } else if (r.same && held && held.key === r.key) {
    confirm();
  }
});
document.addEventListener('pointerdown', (e) => {
  const f = fieldOf(e.target);
  if (!f) { withdraw(); return; }
  pointer = true; active = f; pendingExact = false; hide();
  ask(f, false);
}, true);
document.addEventListener('pointerup', (e) => {
  if (!pointer) return;
  pointer = false;
  pendingExact = overlay.style.display === 'block';  // keep the frame until the exact one has arrived
}, true);
document.addEventListener('focusin', (e) => {
  const f = fieldOf(e.target);
  if (!f) { withdraw(); return; }
  if (!pointer && (f !== active || ready !== f)) { active = f; ask(f, false); }
}, true);
document.addEventListener('input', (e) => {
  const f = fieldOf(e.target);
  if (!f) { withdraw(); return; }
  if (f !== active) { active = f; ask(f, false); return; }
  show(f, Number(e.target.value));
  if (!pointer) {  // keyboard or number box: the exact render after a short pause, as on release
    clearTimeout(timer);
    const el = e.target;
    timer = setTimeout(() => { pendingExact = true; el.dispatchEvent(new PointerEvent('pointerup', {bubbles: true})); }, 250);
  }
}, true);
// A new Explore image: the state may have changed (seed, inversion, model): withdraw the strip at once, and ask
// again ahead of the next drag once the image is on screen and the page has been quiet for a moment (a strip
// rendered while the image downloads would take the server's cores from it).
let lastSrc = null, prefetchTimer = null;
const watchImage = () => {
  const img = document.querySelector('#explore-image img');
  if (!img || img.src === lastSrc) return;
  lastSrc = img.src;
  if (!pointer) ready = null;
  const done = () => {
    pendingExact = false; hide();
    clearTimeout(prefetchTimer);
    prefetchTimer = setTimeout(() => { if (!pointer && img.src === lastSrc) ask(active || 'c0', true); }, 300);
  };
  img.complete ? done() : img.addEventListener('load', done, {once: true});
};
new MutationObserver(watchImage).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                          attributeFilter: ['src']});
"""
STRIP_ELEMS = {"psi": "psi", **{n: f"dir{i}" for i, n in enumerate(DIRECTION_FIELDS)}, "layer_start": "layer-start",
               "layer_end": "layer-end", "mix_start": "mix-start", "mix_end": "mix-end"}  # strip field -> elem_id
CATEGORY_INFO = ("Any draws a category per seed, every one equally often (so a fruit or a flag shows up as often as "
                 "a face); pick a group or a kind to draw only those.")


def picker_args(model: LoadedModel, category: str = "any", style: str = "any") -> tuple[dict, dict]:
    """The model-dependent arguments of the Category and Style dropdowns (choices, value, visibility: hidden for a
    model without them): the one source for the layouts and for the handlers' updates."""
    space = model.labels
    return ({"choices": space.category_choices(), "value": category, "visible": space.conditional},
            {"choices": space.style_choices(), "value": style, "visible": bool(space.styles())})


def label_pickers(model: LoadedModel, category: str = "any", style: str = "any") -> tuple[gr.Dropdown, gr.Dropdown]:
    """Updates of the Category and Style dropdowns for `model`, for handlers to return (called while the layout is
    built, they would become components of their own)."""
    cat, sty = picker_args(model, category, style)
    return gr.Dropdown(**cat), gr.Dropdown(**sty)


def image_classes(model: LoadedModel) -> list[str]:
    """How the Explore image is shown: small models upscaled crisply to 320 px, 256 px at native size, larger ones
    scaled to 512 px to fit the page."""
    return ["small"] if model.resolution <= 128 else ["native"] if model.resolution <= 256 else ["large"]


def _sid(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def explore_api(fn: Callable[..., Any], event: bool = False) -> Callable[..., Any]:
    """Give `fn(values, request)` the named signature of the Explore controls (seed, psi, ..., c0..c5, ..., source),
    which Gradio turns into the `/generate` API's parameters. event=True: `fn(values, request, event_data)`."""
    defaults = ExploreState().values()
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in zip(API_FIELDS, defaults)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request))
    if event:
        params.append(inspect.Parameter("evt", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                        annotation=gr.EventData))

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.Signature(params).bind(*args, **kwargs)
        bound.apply_defaults()
        values = [bound.arguments[n] for n in API_FIELDS]
        if event:
            return fn(values, bound.arguments["request"], bound.arguments["evt"])
        return fn(values, bound.arguments["request"])

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


class Handlers:
    """The app's event handlers over the per-session state; one instance per app (no module-level state)."""

    def __init__(self, sessions: Sessions, models: ModelCache, device: torch.device, notice: str = ""):
        self.sessions = sessions  # per-session models, inverted images, fine-tune results, jobs
        self.models = models  # models picked from the catalogue, loaded once
        self.renderer = explore.Renderer()  # memo of recent explore images, all sessions; its queue batches them
        self.strips = StripCache(self.renderer.queue)  # scrub strips, rendered through the same queue
        self.device = device
        self.notice = notice  # shown under the banner (e.g. why the configured Hub model is not the one shown)
        self.generate = explore_api(self._generate)  # the public /generate endpoint
        self.render = explore_api(self._render)  # the UI's render: image + share link + JSON in one event
        self.strip = explore_api(self._strip, event=True)  # a slider's scrub strip, asked by the page (STRIP_JS)

    # ---- Explore --------------------------------------------------------------------------------------------

    @gpu(duration=20)
    def _draw(self, values: list, request: gr.Request | None) -> tuple[ExploreState, np.ndarray]:
        """The explore state (validated, in place, by the renderer) and its image: a seed (or the inverted upload),
        truncation psi, noise mode, direction sliders and style mixing."""
        sid = _sid(request)
        try:
            st = ExploreState.from_values(values)
            return st, self.renderer.render(self.sessions.model(sid), st, self.sessions.projection(sid))
        except (ValueError, TypeError) as e:
            raise gr.Error(f"bad parameters: {e}") from None

    def _generate(self, values: list, request: gr.Request | None) -> np.ndarray:
        """Render one image for an explore state (the /generate API)."""
        return self._draw(values, request)[1]

    def _render(self, values: list, request: gr.Request | None) -> tuple[np.ndarray, str, str]:
        st, img = self._draw(values, request)
        host = request.headers.get("host") if request is not None else None
        proto = request.headers.get("x-forwarded-proto", "http") if request is not None else "http"
        return img, (f"{proto}://{host}/" if host else "") + "?" + st.to_query(), st.to_json()

    @gpu(duration=20)
    def _strip(self, values: list, request: gr.Request | None, evt: gr.EventData) -> str:
        """The scrub strip the page asked for ({field, nonce, have, prefetch} in the event's data) for the current
        controls, as JSON for STRIP_JS: the sprite and its grid, `same` when the page holds it already, `off` with
        the reason when there is none, `deferred` for a prefetch while renders wait."""
        ask = getattr(evt, "_data", None) or {}
        field = ask.get("field") if isinstance(ask, dict) else None
        if field not in STRIP_FIELDS:
            raise gr.Error(f"no scrub strip for {field!r}; strips exist for {', '.join(STRIP_FIELDS)}")
        out: dict[str, Any] = {"nonce": ask.get("nonce"), "field": field}
        if ask.get("prefetch") and self.renderer.queue.busy():
            return json.dumps({**out, "deferred": True})  # speculative work waits while others' renders wait
        sid = _sid(request)
        try:
            strip = self.strips.get(self.sessions.model(sid), ExploreState.from_values(values), self.sessions.projection(sid),
                                    field)
        except ValueError as e:  # StripOff and bad values: the page renders on release, as without strips
            # (the release render then reports bad values as a clear error)
            return json.dumps({**out, "off": f"no scrub preview: {e}"})
        out.update(key=strip.key, lo=strip.lo, step=strip.step, count=strip.count)
        if ask.get("have") == strip.key:
            return json.dumps({**out, "same": True})
        return json.dumps({**out, "url": strip.data_url()})

    def controls(self, model: LoadedModel, st: ExploreState) -> list:
        """Updates for every Explore control (API_FIELDS order) showing `st` on `model`."""
        st.validate(model.num_ws, model.labels)
        labels = explore.slider_labels(model, st.method)
        pickers = dict(zip(("category", "style"), label_pickers(model, st.category, st.style)))
        out: list = []
        for name, value in zip(API_FIELDS, st.values()):
            if name in pickers:
                out.append(pickers[name])
            elif name in LAYER_FIELDS:
                out.append(gr.Slider(value=value, maximum=model.num_ws))
            elif name in DIRECTION_FIELDS:
                out.append(gr.Slider(value=value, label=labels[DIRECTION_FIELDS.index(name)]))
            else:
                out.append(value)
        return out

    def _default_state(self, model: LoadedModel) -> ExploreState:
        return explore.default_state(model, default_noise_mode(model.checkpoint.meta))

    def on_load(self, request: gr.Request) -> list:
        self.sessions.prune()
        model = self.sessions.model(_sid(request))
        params = dict(request.query_params) if request is not None else {}
        try:
            st = ExploreState.from_query(params, self._default_state(model)).validate(model.num_ws, model.labels)
        except ValueError as e:
            gr.Warning(f"Ignoring the link's parameters: {e}")
            st = self._default_state(model)
        return [*self.controls(model, st), self.banner(model)]

    def import_json(self, text: str, request: gr.Request = None) -> list:
        sid = _sid(request)
        try:
            st = ExploreState.from_json(text)
            if st.source == "image" and self.sessions.projection(sid) is None:
                st.source = "seed"
            return self.controls(self.sessions.model(sid), st)
        except (ValueError, TypeError) as e:
            raise gr.Error(str(e)) from None

    def directions_changed(self, method: str, request: gr.Request = None) -> list:
        labels = explore.slider_labels(self.sessions.model(_sid(request)), method)
        return [gr.Slider(label=labels[i]) for i in range(NUM_SLIDERS)]

    @staticmethod
    def random_seed() -> int:
        return random.randrange(0, 100_000)

    @staticmethod
    def reset_sliders() -> list[float]:
        return [0.0] * NUM_SLIDERS

    # ---- Models ---------------------------------------------------------------------------------------------

    def banner(self, model: LoadedModel) -> str:
        meta = model.checkpoint.meta
        kimg = (meta.get("nimg") or 0) / 1000
        notice = f"\n\n⚠️ {self.notice}" if self.notice else ""
        return (f"**Model:** {model.label} · {meta.get('dataset', '?')} · {model.resolution} px · {kimg:,.0f}k images "
                f"seen · device `{self.device.type}`{notice}")

    def _switch(self, sid: str, model: LoadedModel | None) -> list:
        model = self.sessions.use_model(sid, model)
        return [self.banner(model), gr.Image(elem_classes=image_classes(model)),
                *self.controls(model, self._default_state(model)), *label_pickers(model)]  # + Interpolate's pickers

    def pick_model(self, path: str | None, request: gr.Request = None) -> list:
        sid = _sid(request)
        if not path or Path(path).resolve() == (self.sessions.base.path or Path()).resolve():
            return self._switch(sid, None)
        try:
            return self._switch(sid, self.models.get(path))
        except CheckpointError as e:
            raise gr.Error(str(e)) from None

    def explore_tuned(self, request: gr.Request = None) -> list:
        tuned = self.sessions.tuned(_sid(request))
        if tuned is None:
            raise gr.Error("run a fine-tune first")
        return [*self._switch(_sid(request), tuned), gr.Tabs(selected="explore")]

    def back_to_base(self, request: gr.Request = None) -> list:
        return self._switch(_sid(request), None)

    # ---- Invert ---------------------------------------------------------------------------------------------

    @gpu(duration=120)
    def invert(self, image_path: str | None, steps: int = explore.INVERT_STEPS,
               wplus_steps: int = explore.INVERT_WPLUS_STEPS, request: gr.Request = None):
        """Invert an uploaded image; streams (status, loss curve, current reconstruction), then switches Explore to it."""
        image_path = getattr(image_path, "name", image_path)
        if not image_path:
            raise gr.Error("upload an image to invert")
        sid = _sid(request)
        model = self.sessions.model(sid)
        try:
            job = self.sessions.start_job(sid, "inversion")
        except JobRefused as e:
            raise gr.Error(str(e)) from None
        losses: list[float] = []
        try:
            for pos in job.wait():
                yield f"waiting for a free slot: position {pos} in line", None, None, gr.update(), gr.update()
            for ev in explore.invert_image(model, image_path, int(steps), int(wplus_steps), job.stop):
                losses.append(ev.loss)
                curve = media.curves_frame([{"step": i + 1, "loss": v} for i, v in enumerate(losses)], keys=("loss",))
                if ev.done:
                    self.sessions.set_projection(sid, explore.Projection.of(ev.ws, model))
                    yield (f"done: {ev.step} steps, PSNR {ev.psnr:.1f} dB. Explore now edits your image (source: "
                           "inverted image).", curve, ev.image, "image", 1.0)
                elif ev.image is not None:
                    yield (f"step {ev.step}/{int(steps) + int(wplus_steps)} ({ev.phase}) · PSNR {ev.psnr:.1f} dB",
                           curve, ev.image, gr.update(), gr.update())
        except (ValueError, TypeError, DatasetError) as e:
            raise gr.Error(str(e)) from None
        finally:
            job.close()

    def stop_invert(self, request: gr.Request = None) -> str:
        return "stopping…" if self.sessions.stop_job(_sid(request), "inversion") else "nothing is running"

    # ---- Interpolate ----------------------------------------------------------------------------------------

    @gpu(duration=60)
    def interpolate(self, seeds: str = INTERPOLATE_DEFAULTS["seeds"],
                    frames_per_segment: int = INTERPOLATE_DEFAULTS["frames_per_segment"],
                    method: str = INTERPOLATE_DEFAULTS["method"], space: str = INTERPOLATE_DEFAULTS["space"],
                    loop: bool = INTERPOLATE_DEFAULTS["loop"], psi: float = INTERPOLATE_DEFAULTS["psi"],
                    noise_mode: str = ExploreState.noise_mode, fps: float = INTERPOLATE_DEFAULTS["fps"],
                    category: str = ANY, style: str = ANY, request: gr.Request = None):
        """Walk through keyframe seeds (each drawn for the category and style; 'any' lets the walk cross them);
        returns a frame strip, the GIF and an MP4 (or WebP) file. The defaults are the tab's (the noise mode is
        Explore's, whose starting value is the model card's)."""
        try:
            anim = media.make_animation(self.sessions.model(_sid(request)), parse_seeds(seeds, max_count=media.MAX_KEYFRAMES),
                                        int(frames_per_segment), method, space, bool(loop), float(psi), noise_mode,
                                        float(fps), self.sessions.workdir(_sid(request), "interp"),
                                        category=category or ANY, style=style or ANY, queue=self.renderer.queue)
        except (ValueError, TypeError) as e:
            raise gr.Error(str(e)) from None
        return anim.strip, str(anim.gif), str(anim.video)

    # ---- Fine-tune ------------------------------------------------------------------------------------------

    @gpu(duration=300)
    def finetune(self, data_source: str = DATA_SOURCES[0], bundled: str = DEFAULT_SET, uploads: list | None = None,
                 steps: int = FINETUNE_LIMITS["steps"][1], lr: float = FINETUNE_DEFAULTS["lr_g"],
                 augment: str = FINETUNE_DEFAULTS["augment"], freeze_mapping: bool = FINETUNE_DEFAULTS["freeze_mapping"],
                 freeze_d_blocks: int = FINETUNE_DEFAULTS["freeze_d_blocks"], mirror: bool = FINETUNE_DEFAULTS["xflip"],
                 seconds: float = FINETUNE_SECONDS, keep_variety: bool = False,
                 d_kind: str = FINETUNE_DEFAULTS["d_kind"], request: gr.Request = None):
        """Fine-tune the current model for `seconds` (at most `steps` steps); streams (status, loss curves, sample
        grid, before/after, checkpoint file, distance-to-your-images curve, your images)."""
        sid = _sid(request)
        base = self.sessions.model(sid)
        try:
            plan = finetune.plan_finetune(
                base, self.device, data_source, bundled, [getattr(f, "name", f) for f in uploads or []], steps=steps,
                lr=lr, augment=augment, freeze_mapping=freeze_mapping, freeze_d_blocks=freeze_d_blocks, mirror=mirror,
                seconds=seconds, keep_variety=keep_variety, d_kind=d_kind)
            for warning in plan.warnings:
                gr.Warning(warning)
            job = self.sessions.start_job(sid, "fine-tune")
        except (ValueError, TypeError, DatasetError, JobRefused) as e:
            raise gr.Error(str(e)) from None
        try:
            for message in finetune.stream_finetune(self.sessions, sid, job, base, plan, self.device):
                if message.warning:
                    gr.Warning(message.warning)
                yield message.outputs(keep=gr.update)
        except finetune.FinetuneFailed as e:
            raise gr.Error(str(e)) from None

    def stop_finetune(self, request: gr.Request = None) -> str:
        if self.sessions.stop_job(_sid(request), "fine-tune"):
            return "stopping after the current step…"
        return "nothing is running"

    def on_unload(self, request: gr.Request) -> None:
        self.sessions.forget(_sid(request))


# ---- Layout -----------------------------------------------------------------------------------------------------


def explore_tab(base: LoadedModel) -> dict[str, Any]:
    """The Explore tab. Returns its components by name; the explore controls under their API_FIELDS names."""
    num_ws = base.num_ws
    st = explore.default_state(base, default_noise_mode(base.checkpoint.meta))
    labels = explore.slider_labels(base, st.method)
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            c["source"] = gr.Radio([("Seed", "seed"), ("Inverted image", "image")], value="seed", label="Start from",
                                   elem_id="source")
            with gr.Row():
                c["seed"] = gr.Number(st.seed, label="Seed", precision=0, minimum=0, maximum=2**32 - 1, elem_id="seed")
                c["random"] = gr.Button("🎲 Random", elem_id="random-seed", scale=0)
            cat, sty = picker_args(base)
            with gr.Row():
                c["category"] = gr.Dropdown(**cat, label="Category", info=CATEGORY_INFO, allow_custom_value=True,
                                            elem_id="category", filterable=True)
                c["style"] = gr.Dropdown(**sty, label="Style", allow_custom_value=True, elem_id="style")
            c["psi"] = gr.Slider(PSI_GRID[0], PSI_GRID[1], st.psi, step=PSI_GRID[2], label="Truncation ψ (1 = none)",
                                 elem_id="psi")
            c["noise_mode"] = gr.Radio(["const", "random", "none"], value=st.noise_mode,
                                       label="Noise mode (per-pixel noise inputs: fixed, fresh, or off)")
            with gr.Accordion("Latent directions", open=True):
                c["method"] = gr.Radio([("SeFa (closed form)", "sefa"), ("GANSpace (PCA of W)", "ganspace")],
                                       value=st.method, label="Method", elem_id="method")
                with gr.Row():
                    c["layer_start"] = gr.Slider(0, num_ws, st.layer_start, step=1, label="Edit from layer",
                                                 elem_id="layer-start")
                    c["layer_end"] = gr.Slider(0, num_ws, st.layer_end, step=1, elem_id="layer-end",
                                               label="to layer (exclusive; all = W, part = W+)")
                for i, name in enumerate(DIRECTION_FIELDS):
                    c[name] = gr.Slider(-explore.SLIDER_RANGE, explore.SLIDER_RANGE, 0.0, step=explore.SLIDER_STEP,
                                        label=labels[i], elem_id=f"dir{i}")
                c["reset"] = gr.Button("Reset sliders", size="sm")
                # The scrub strips' page side (STRIP_JS) and its note; hidden HTML would not run its script.
                c["strip"] = gr.HTML("", html_template='<div class="strip-note"></div>', js_on_load=STRIP_JS,
                                     elem_id="strip", fields=json.dumps(STRIP_ELEMS))
            with gr.Accordion("Style mixing", open=False):
                c["mix_seed"] = gr.Number(st.mix_seed, label="Second seed", precision=0, minimum=0, maximum=2**32 - 1)
                with gr.Row():
                    c["mix_start"] = gr.Slider(0, num_ws, st.mix_start, step=1, label="Take its layers from",
                                               elem_id="mix-start")
                    c["mix_end"] = gr.Slider(0, num_ws, st.mix_end, step=1, label="to (exclusive; empty = off)",
                                             elem_id="mix-end")
        with gr.Column(scale=1, min_width=300):
            c["image"] = gr.Image(label="Generated", format="png", elem_id="explore-image", interactive=False,
                                  buttons=["download"], elem_classes=image_classes(base))
            c["link"] = gr.Textbox(label="Shareable link", elem_id="share-link", buttons=["copy"])
            with gr.Accordion("Invert your image", open=False):
                # A file, not gr.Image: we decode it ourselves, so a broken upload gets a message that names it.
                c["inv_image"] = gr.File(label="Image to invert (PNG/JPEG/WebP/BMP/GIF)", file_types=["image"],
                                         elem_id="invert-upload")
                with gr.Row():
                    c["inv_steps"] = gr.Slider(10, 500, explore.INVERT_STEPS, step=10, label="Steps in W")
                    c["inv_wplus"] = gr.Slider(0, 500, explore.INVERT_WPLUS_STEPS, step=10,
                                               label="then steps in W+ (0 = stay in W)")
                with gr.Row():
                    c["inv_go"] = gr.Button("Invert", variant="primary", elem_id="invert-go")
                    c["inv_stop"] = gr.Button("Stop", variant="stop", size="sm")
                c["inv_status"] = gr.Markdown("", elem_id="invert-status")
                with gr.Row():
                    c["inv_plot"] = gr.LinePlot(x="step", y="value", color="series", label="Loss", elem_id="invert-plot",
                                                height=200)
                    c["inv_frame"] = gr.Image(label="Reconstruction", format="png", interactive=False, elem_id="invert-frame")
            with gr.Accordion("State as JSON (export / import)", open=False):
                # A plain text box: a code editor re-rendered on every slider move delays the image's paint.
                c["state_json"] = gr.Textbox(label="Explore state", lines=8, max_lines=16, elem_id="state-json",
                                             buttons=["copy"])
                c["json_in"] = gr.Textbox(label="Paste a state JSON", lines=3)
                c["json_apply"] = gr.Button("Apply JSON", size="sm")
    return c


def interpolate_tab(base: LoadedModel) -> dict[str, Any]:
    c: dict[str, Any] = {}
    cat, sty = picker_args(base)
    with gr.Row():
        with gr.Column(min_width=300):
            c["seeds"] = gr.Textbox(INTERPOLATE_DEFAULTS["seeds"], label="Keyframe seeds (comma-separated)",
                                    elem_id="keyframes")
            with gr.Row():
                c["category"] = gr.Dropdown(**cat, allow_custom_value=True, elem_id="interp-category",
                                            label="Category of every keyframe (Any: each keyframe its own)")
                c["style"] = gr.Dropdown(**sty, label="Style", allow_custom_value=True, elem_id="interp-style")
            c["frames"] = gr.Slider(2, 60, INTERPOLATE_DEFAULTS["frames_per_segment"], step=1,
                                    label="Frames per segment")
            with gr.Row():
                c["method"] = gr.Radio(["slerp", "lerp"], value=INTERPOLATE_DEFAULTS["method"], label="Interpolation")
                c["space"] = gr.Radio([("Z", "z"), ("W", "w")], value=INTERPOLATE_DEFAULTS["space"], label="Space")
            c["loop"] = gr.Checkbox(INTERPOLATE_DEFAULTS["loop"], label="Loop back to the first seed")
            c["psi"] = gr.Slider(PSI_GRID[0], PSI_GRID[1], INTERPOLATE_DEFAULTS["psi"], step=PSI_GRID[2], label="Truncation ψ")
            c["fps"] = gr.Slider(1, 30, INTERPOLATE_DEFAULTS["fps"], step=1, label="Frames per second")
            c["go"] = gr.Button("Make animation", variant="primary", elem_id="interp-go")
        with gr.Column(min_width=300):
            c["strip"] = gr.Image(label="Frames", format="png", interactive=False, elem_id="interp-strip")
            c["gif"] = gr.Image(label="GIF", type="filepath", interactive=False, elem_id="interp-gif")
            c["video"] = gr.File(label="Video (MP4, or WebP without ffmpeg)", elem_id="interp-video")
    return c


def finetune_tab() -> dict[str, Any]:
    sets = list_sets()
    lo, hi = FINETUNE_LIMITS["steps"]
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(min_width=320):
            c["source"] = gr.Radio(list(DATA_SOURCES), value=DATA_SOURCES[0], label="Data", elem_id="ft-source")
            c["bundled"] = gr.Dropdown([(f"{k}: {v}", k) for k, v in sets.items()],
                                       value=DEFAULT_SET if DEFAULT_SET in sets else None, label="Bundled set")
            c["uploads"] = gr.File(file_count="multiple", file_types=["image", ".zip"],
                                   label="Your images (PNG/JPEG/WebP or a zip)", elem_id="ft-upload")
            c["seconds"] = gr.Slider(10, 600, FINETUNE_SECONDS, step=10, label="Run for (seconds); Stop ends it sooner",
                                     elem_id="ft-seconds")
            c["steps"] = gr.Slider(5, hi, hi, step=5, label=f"At most this many steps (batch {FINETUNE_DEFAULTS['batch']})",
                                   elem_id="ft-steps")
            with gr.Accordion("Options", open=False):
                c["lr"] = gr.Number(FINETUNE_DEFAULTS["lr_g"], label="Learning rate (G and D)")
                c["augment"] = gr.Radio(list(AUGMENT_MODES), value=FINETUNE_DEFAULTS["augment"],
                                        label="Augmentation (DiffAugment; ada adapts p)")
                c["freeze_mapping"] = gr.Checkbox(FINETUNE_DEFAULTS["freeze_mapping"], label="Freeze mapping network")
                c["freeze_d"] = gr.Slider(0, 3, FINETUNE_DEFAULTS["freeze_d_blocks"], step=1,
                                          label="Freeze highest-resolution D blocks (FreezeD)")
                c["mirror"] = gr.Checkbox(FINETUNE_DEFAULTS["xflip"], label="Also train on left-right mirrored copies "
                                          "(for subjects that may face either way)")
                c["keep_variety"] = gr.Checkbox(False, label="Keep variety (for a few images, say 30 or fewer: each "
                                                "sample keeps its own subject in the new style instead of drifting "
                                                "towards copies of your images: the coarsest layers stay fixed)",
                                                elem_id="ft-keep-variety")
                c["d_kind"] = gr.Radio(list(D_KINDS), value=FINETUNE_DEFAULTS["d_kind"], elem_id="ft-d-kind",
                                       label="Discriminator: the model's own (stylegan2), or a fresh one that sees "
                                             "through a frozen ImageNet network (projected; also for models "
                                             "imported without one)")
            with gr.Row():
                c["start"] = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")
                c["stop"] = gr.Button("Stop", variant="stop", elem_id="ft-stop")
            c["status"] = gr.Markdown("", elem_id="ft-status")
        with gr.Column(min_width=320):
            c["plot"] = gr.LinePlot(x="step", y="value", color="series", label="Losses (live)", elem_id="ft-plot",
                                    height=220)
            c["kid"] = gr.LinePlot(x="seconds", y="KID", label="Distance to your images (KID, lower is closer; live)",
                                   elem_id="ft-kid", height=200)
            c["grid"] = gr.Image(label="Fixed-seed samples (live)", format="png", interactive=False, elem_id="ft-grid")
            c["targets"] = gr.Image(label="Your images", format="png", interactive=False, elem_id="ft-targets")
    c["compare"] = gr.Image(label="Before (top) / after (bottom), same seeds", format="png", interactive=False,
                            elem_id="ft-compare")
    with gr.Row():
        c["download"] = gr.File(label="Fine-tuned checkpoint (safetensors + card)", elem_id="ft-download")
        with gr.Column():
            c["explore"] = gr.Button("Explore this model", elem_id="ft-explore")
            c["back"] = gr.Button("Back to the base model", elem_id="ft-back")
    return c


def create_app(checkpoint: str | Path | None = None, device: str | None = None) -> gr.Blocks:
    """The whole app for the model at `checkpoint` (default: $GAN_CHECKPOINT or the shipped one)."""
    device_ = pick_device(device or os.environ.get("GAN_DEVICE") or None)
    if device_.type == "cpu" and os.environ.get("GAN_THREADS"):
        torch.set_num_threads(int(os.environ["GAN_THREADS"]))
    spec = checkpoint or os.environ.get("GAN_CHECKPOINT") or None
    try:
        ck, notice = resolve_checkpoint(spec), ""
    except CheckpointError as e:
        if not str(spec).startswith(HUB_PREFIX):
            raise
        ck, notice = resolve_checkpoint(DEFAULT_CHECKPOINT), f"{e}; showing the shipped model instead"
        print(f"warning: {notice}", file=sys.stderr)
    base = serve(ck, f"{ck.meta.get('name') or Path(ck.path).stem} ({Path(ck.path).name})", device_)
    h = Handlers(Sessions(base), ModelCache(device_), device_, notice)
    folders = [CHECKPOINT_DIR, Path(ck.path).parent] + ([Path(os.environ["GAN_CHECKPOINT_DIR"])]
                                                         if os.environ.get("GAN_CHECKPOINT_DIR") else [])
    entries = catalogue(folders)
    choices = [(e.label(), str(e.path)) for e in entries]
    if str(ck.path) not in {p for _, p in choices}:
        choices.insert(0, (base.label, str(ck.path)))

    # Gradio's copies of served files (images, GIFs, checkpoints) are removed after a day.
    with gr.Blocks(title="GAN Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# GAN Studio\nExplore, interpolate and fine-tune a StyleGAN2 generator.")
        with gr.Row():
            banner = gr.Markdown(h.banner(base), elem_id="model-banner")
            picker = gr.Dropdown(choices, value=str(ck.path), label="Model", elem_id="model-picker", scale=0,
                                 min_width=320)
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                ex = explore_tab(base)
            with gr.Tab("Interpolate", id="interpolate"):
                it = interpolate_tab(base)
            with gr.Tab("Fine-tune", id="finetune"):
                ft = finetune_tab()

        # ---- Explore: every change re-renders in one event (image, share link and JSON from the same handler) --
        controls = [ex[n] for n in API_FIELDS]
        sliders = [ex[n] for n in DIRECTION_FIELDS]
        rendered = [ex["image"], ex["link"], ex["state_json"]]
        # Renders share one pool wide enough for the render queue to batch many users (the handlers mostly wait on
        # the queue's one worker; Gradio's default of 4 at a time would cap a batch at 4).
        renders = dict(concurrency_id="explore", concurrency_limit=32)
        render = dict(fn=h.render, inputs=controls, outputs=rendered, api_visibility="private", show_progress="hidden",
                      **renders)
        ex["seed"].submit(trigger_mode="always_last", **render)
        ex["seed"].input(trigger_mode="always_last", **render)
        # Sliders render on release only: while one is dragged the page plays its scrub strip (STRIP_JS), and
        # keyboard / number-box moves get a release from STRIP_JS after a short pause.
        for name in STRIP_FIELDS:
            ex[name].release(trigger_mode="always_last", **render)
        # trigger_mode "multiple": "always_last" would resend a waiting ask with the first ask's event data (its nonce).
        ex["strip"].click(h.strip, controls, ex["strip"], api_visibility="private", show_progress="hidden",
                          trigger_mode="multiple", concurrency_id="strips", concurrency_limit=2)
        for name in ("noise_mode", "mix_seed", "source", "category", "style"):
            ex[name].change(trigger_mode="always_last", **render)
        ex["random"].click(h.random_seed, None, ex["seed"], api_visibility="private", queue=False).then(**render)
        ex["method"].change(h.directions_changed, ex["method"], sliders, api_visibility="private").then(**render)
        ex["reset"].click(h.reset_sliders, None, sliders, api_visibility="private",
                          queue=False).then(**render)
        ex["json_apply"].click(h.import_json, ex["json_in"], controls, api_visibility="private").then(**render)
        # The public /generate endpoint: the same render, image only (API clients get one PNG).
        gr.Button(visible=False).click(h.generate, controls, ex["image"], api_name="generate", **renders)

        # ---- jobs: inversion and fine-tuning wait in the sessions' own line (one job per session) -------------
        jobs = dict(concurrency_id="jobs", concurrency_limit=h.sessions.job_slots + h.sessions.max_waiting)
        ex["inv_go"].click(h.invert, [ex["inv_image"], ex["inv_steps"], ex["inv_wplus"]],
                           [ex["inv_status"], ex["inv_plot"], ex["inv_frame"], ex["source"], ex["psi"]],
                           api_name="invert", **jobs).then(**render)
        ex["inv_stop"].click(h.stop_invert, None, ex["inv_status"], api_visibility="private", queue=False)

        it["go"].click(h.interpolate, [it["seeds"], it["frames"], it["method"], it["space"], it["loop"], it["psi"],
                                       ex["noise_mode"], it["fps"], it["category"], it["style"]],
                       [it["strip"], it["gif"], it["video"]],
                       api_name="interpolate", concurrency_id="render", concurrency_limit=2)

        ft["start"].click(h.finetune, [ft["source"], ft["bundled"], ft["uploads"], ft["steps"], ft["lr"], ft["augment"],
                                       ft["freeze_mapping"], ft["freeze_d"], ft["mirror"], ft["seconds"],
                                       ft["keep_variety"], ft["d_kind"]],
                          [ft["status"], ft["plot"], ft["grid"], ft["compare"], ft["download"], ft["kid"],
                           ft["targets"]], api_name="finetune", **jobs)
        ft["uploads"].upload(lambda: UPLOAD_SOURCE, None, ft["source"], api_visibility="private", queue=False)
        ft["stop"].click(h.stop_finetune, None, ft["status"], api_visibility="private", queue=False)

        # ---- models: the picker, the fine-tune result, back to the base model ----------------------------------
        switched = [banner, ex["image"], *controls, it["category"], it["style"]]
        picker.change(h.pick_model, picker, switched, api_visibility="private").then(**render)
        ft["explore"].click(h.explore_tuned, None, [*switched, tabs], api_visibility="private").then(**render)
        ft["back"].click(h.back_to_base, None, switched, api_visibility="private").then(**render)

        demo.load(h.on_load, None, [*controls, banner], api_visibility="private").then(**render)
        demo.unload(h.on_unload)
    demo.queue(max_size=64, default_concurrency_limit=4)
    return demo


if __name__ == "__main__":
    create_app().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="50mb",
        css=CSS,
    )
