"""The Explore tab's model: its state (seed, psi, noise, direction sliders on a layer range, style mixing), the
state's URL/JSON codec, rendering (through the batched render queue) with a memo, and inverting an uploaded image
into the model.

The state's fields, in order, are the Explore controls and the `/generate` API's parameters: `API_FIELDS` is the
one list both are built from (the slider values travel as c0 .. c{NUM_SLIDERS-1}).
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from gan import directions as dirs
from gan.dataset import load_images
from gan.images import from_uint8
from gan.labels import ANY, LabelSpace
from gan.latent import check_params, mix_styles, seeds_to_ws
from gan.projector import ProjectEvent, project
from studio.models import LoadedModel
from studio.render_queue import RenderQueue, render_ws

NUM_SLIDERS = 6  # direction sliders shown in the Explore tab
SLIDER_RANGE = 3.0  # +- standard deviations of w along the direction
SLIDER_STEP = 0.1  # the direction sliders' step in the page (a scrub strip has a frame per step)
DIRECTION_FIELDS: tuple[str, ...] = tuple(f"c{i}" for i in range(NUM_SLIDERS))  # their API_FIELDS names, in order
MAX_INVERT_STEPS = 1000
INVERT_STEPS, INVERT_WPLUS_STEPS = 150, 100  # default optimisation steps in W, then in W+ (4-10 s on a CPU)
_PROJECTION_IDS = itertools.count(1)


@dataclass
class Projection:
    """An uploaded image inverted into a session's model."""

    id: int  # unique in this process (part of the render memo key, shared by all sessions)
    ws: torch.Tensor  # (1, num_ws, w_dim), CPU
    model_sha256: str  # the model it was inverted into

    @staticmethod
    def of(ws: torch.Tensor, model: LoadedModel) -> "Projection":
        return Projection(next(_PROJECTION_IDS), ws.detach().cpu(), model.sha256)


@dataclass
class ExploreState:
    seed: int = 0
    psi: float = 0.7
    noise_mode: str = "const"
    method: str = "sefa"  # 'sefa' or 'ganspace'
    layer_start: int = 0  # sliders edit ws[layer_start:layer_end] (all layers = W, part = W+)
    layer_end: int = 10
    coeffs: list[float] = field(default_factory=lambda: [0.0] * NUM_SLIDERS)  # slider values, in stds
    mix_seed: int = 1
    mix_start: int = 0  # layers [mix_start, mix_end) come from mix_seed
    mix_end: int = 0  # empty range: no mixing
    source: str = "seed"  # 'seed', or 'image': start from the session's inverted image
    category: str = ANY  # conditional models: 'any' (drawn per seed), a group or a subgroup
    style: str = ANY  # conditional models with styles: 'any' (drawn per seed) or a style

    def validate(self, num_ws: int, labels: LabelSpace | None = None) -> "ExploreState":
        """Raise ValueError on values the server must not accept; clamp layer ranges to the model; check the
        category and style against the model's labels when given."""
        self.category, self.style = str(self.category or ANY).strip(), str(self.style or ANY).strip()
        if labels is not None:
            labels.resolve(self.category, self.style)
        elif len(self.category) > 100 or len(self.style) > 100:
            raise ValueError("category and style are short names")
        if not 0 <= int(self.seed) < 2**32 or not 0 <= int(self.mix_seed) < 2**32:
            raise ValueError("seed must be an integer in [0, 4294967295]")
        check_params(float(self.psi), self.noise_mode)
        if self.source not in ("seed", "image"):
            raise ValueError("source must be 'seed' or 'image'")
        if self.method not in dirs.METHODS:
            raise ValueError(f"method must be one of {dirs.METHODS}")
        if len(self.coeffs) > NUM_SLIDERS or any(not math.isfinite(c) or abs(c) > 10 for c in self.coeffs):
            raise ValueError(f"at most {NUM_SLIDERS} slider values, each within +-10")
        self.seed, self.mix_seed, self.psi = int(self.seed), int(self.mix_seed), float(self.psi)
        self.coeffs = [float(c) for c in self.coeffs] + [0.0] * (NUM_SLIDERS - len(self.coeffs))
        clamp = lambda v: max(0, min(int(v), num_ws))  # noqa: E731
        self.layer_start, self.layer_end = clamp(self.layer_start), clamp(self.layer_end)
        self.mix_start, self.mix_end = clamp(self.mix_start), clamp(self.mix_end)
        if self.layer_end < self.layer_start:
            self.layer_start, self.layer_end = self.layer_end, self.layer_start
        if self.mix_end < self.mix_start:
            self.mix_start, self.mix_end = self.mix_end, self.mix_start
        return self

    # ---- the flat form: one value per control / API parameter ----------------------------------------------

    def values(self) -> list[Any]:
        """The state as a flat list in `API_FIELDS` order (the coefficients spread out as c0, c1, ...)."""
        out: list[Any] = []
        for f in fields(self):
            out.extend(self.coeffs) if f.name == "coeffs" else out.append(getattr(self, f.name))
        return out

    @staticmethod
    def from_values(values: list[Any] | tuple[Any, ...]) -> "ExploreState":
        """Inverse of `values()`: a flat list of control values -> state (not yet validated)."""
        if len(values) != len(API_FIELDS):
            raise ValueError(f"expected {len(API_FIELDS)} explore values, got {len(values)}")
        d = dict(zip(API_FIELDS, values))
        try:
            coeffs = [float(d.pop(f"c{i}") or 0.0) for i in range(NUM_SLIDERS)]
            return ExploreState(seed=int(d["seed"] or 0), psi=float(d["psi"]), noise_mode=d["noise_mode"],
                                method=d["method"], layer_start=int(d["layer_start"]), layer_end=int(d["layer_end"]),
                                coeffs=coeffs, mix_seed=int(d["mix_seed"] or 0), mix_start=int(d["mix_start"]),
                                mix_end=int(d["mix_end"]), source=d["source"] or "seed",
                                category=d["category"] or ANY, style=d["style"] or ANY)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad explore value: {e}") from None

    # ---- JSON and URL codecs --------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    @staticmethod
    def from_json(text: str) -> "ExploreState":
        try:
            d = json.loads(text)
            assert isinstance(d, dict)
            known = {f.name for f in fields(ExploreState)}
            return ExploreState(**{k: v for k, v in d.items() if k in known})
        except (json.JSONDecodeError, AssertionError, TypeError) as e:
            raise ValueError(f"not an explore-state JSON: {e}") from None

    def to_query(self) -> str:
        """URL parameters (an inverted image cannot travel in a link: the link shows the seed)."""
        q = {"seed": self.seed, "psi": f"{self.psi:g}", "noise": self.noise_mode, "method": self.method,
             "layers": f"{self.layer_start}-{self.layer_end}", "c": ",".join(f"{c:g}" for c in self.coeffs)}
        if self.mix_end > self.mix_start:
            q.update(mix=self.mix_seed, mixlayers=f"{self.mix_start}-{self.mix_end}")
        if self.category != ANY:  # links of unconditional models stay as they were
            q["cat"] = urllib.parse.quote(self.category)
        if self.style != ANY:
            q["style"] = urllib.parse.quote(self.style)
        return "&".join(f"{k}={v}" for k, v in q.items())

    @staticmethod
    def from_query(params: dict[str, str], default: "ExploreState | None" = None) -> "ExploreState":
        """Query parameters (seed, psi, noise, method, layers=a-b, c=1,0,-2, mix, mixlayers, cat, style) -> state."""
        st = copy.deepcopy(default or ExploreState())
        try:
            if "seed" in params:
                st.seed = int(params["seed"])
            if "psi" in params:
                st.psi = float(params["psi"])
            if "noise" in params:
                st.noise_mode = params["noise"]
            if "method" in params:
                st.method = params["method"]
            if "layers" in params:
                st.layer_start, st.layer_end = (int(v) for v in params["layers"].split("-"))
            if "c" in params:
                st.coeffs = [float(v) for v in params["c"].split(",") if v.strip()]
            if "mix" in params:
                st.mix_seed = int(params["mix"])
            if "mixlayers" in params:
                st.mix_start, st.mix_end = (int(v) for v in params["mixlayers"].split("-"))
            if "cat" in params:
                st.category = urllib.parse.unquote(params["cat"])
            if "style" in params:
                st.style = urllib.parse.unquote(params["style"])
        except ValueError as e:
            raise ValueError(f"bad link parameter: {e}") from None
        return st


# The Explore controls / `/generate` parameters, in order: the state's fields with coeffs spread out.
API_FIELDS: tuple[str, ...] = tuple(
    name for f in fields(ExploreState)
    for name in ([f"c{i}" for i in range(NUM_SLIDERS)] if f.name == "coeffs" else [f.name])
)


def default_state(model: LoadedModel, noise_mode: str) -> ExploreState:
    """The state a fresh page starts from for `model`: every layer editable, the card's noise mode."""
    return ExploreState(noise_mode=noise_mode, layer_end=model.num_ws)


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def directions_for(model: LoadedModel, method: str) -> dirs.Directions:
    return dirs.cached(model.G, model.sha256, method, k=NUM_SLIDERS)


def slider_labels(model: LoadedModel, method: str) -> list[str]:
    d = directions_for(model, method)
    return d.labels() + [f"{method} {i}: (none)" for i in range(len(d), NUM_SLIDERS)]


class Renderer:
    """Renders explore states through one RenderQueue (all sessions' renders batched together), memoising recent
    images (a share link opened twice, users on the same state, a release on a value rendered before). Shared by
    all sessions: keys include the model's hash."""

    def __init__(self, size: int = 512, queue: RenderQueue | None = None):
        self.size = size  # images kept (64 px: ~6 MB)
        self.queue = queue or RenderQueue()  # the one batched synthesis path (exact frames and scrub strips)
        self._memo: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()

    def render(self, model: LoadedModel, st: ExploreState, projection: Projection | None = None) -> np.ndarray:
        """One image (H, W, 3) uint8 at the model's resolution for an explore state (validated here)."""
        check_source(model, st, projection)
        key = (model.sha256, projection.id if st.source == "image" else 0, json.dumps(st.__dict__, sort_keys=True))
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        img = self.queue.render(model, state_ws(model, st, projection), st.noise_mode)[0]
        if st.noise_mode != "random":  # random noise must give a new image every time
            with self._lock:
                self._memo[key] = img
                while len(self._memo) > self.size:
                    self._memo.popitem(last=False)
        return img


def check_source(model: LoadedModel, st: ExploreState, projection: Projection | None) -> None:
    """Validate `st` for `model` (in place); ValueError if it starts from an inverted image that is missing or
    belongs to another model."""
    st.validate(model.num_ws, model.labels)
    if st.source == "image":
        if projection is None:
            raise ValueError("no inverted image yet: upload one under 'Invert your image' first")
        if projection.model_sha256 != model.sha256:
            raise ValueError("the inverted image belongs to another model; invert it again for this one")


@torch.inference_mode()
def base_ws(model: LoadedModel, st: ExploreState, projection: Projection | None = None) -> torch.Tensor:
    """The state's ws before the direction sliders: a seed (or the inverted image), truncation psi, style mixing.
    Returns (1, num_ws, w_dim). Always computed at batch 1, so the same state always gives the same bits."""
    if st.source == "image":
        ws = model.G.w_avg.lerp(projection.ws.to(model.G.w_avg.device), st.psi)  # (1, num_ws, w_dim)
    else:
        c = model.labels.c_for_seeds([st.seed], st.category, st.style)  # (1, c_dim) or None
        ws = seeds_to_ws(model.G, [st.seed], psi=st.psi, c=c)  # (1, num_ws, w_dim)
    if st.mix_end > st.mix_start:
        c_mix = model.labels.c_for_seeds([st.mix_seed], st.category, st.style)  # (1, c_dim) or None
        ws = mix_styles(ws, seeds_to_ws(model.G, [st.mix_seed], psi=st.psi, c=c_mix), st.mix_start, st.mix_end)
    return ws


def edit_ws(model: LoadedModel, st: ExploreState, ws: torch.Tensor) -> torch.Tensor:
    """base_ws plus the direction sliders on the state's layer range. (1, num_ws, w_dim) -> (1, num_ws, w_dim)."""
    if any(c != 0 for c in st.coeffs):
        ws = dirs.apply(ws, directions_for(model, st.method), st.coeffs, st.layer_start, st.layer_end)
    return ws


def state_ws(model: LoadedModel, st: ExploreState, projection: Projection | None = None) -> torch.Tensor:
    """The ws of a validated state: (1, num_ws, w_dim)."""
    return edit_ws(model, st, base_ws(model, st, projection))


def render_state(model: LoadedModel, st: ExploreState, projection: Projection | None = None,
                 queue: RenderQueue | None = None) -> np.ndarray:
    """Render a validated state -> (H, W, 3) uint8, through `queue` (else the synthesis in this thread)."""
    ws = state_ws(model, st, projection)
    return render_ws(model, ws, st.noise_mode, queue)[0]


# ----------------------------------------------------------------------------------------------------------------
# Invert


def invert_image(model: LoadedModel, path: str | Path, steps: int, wplus_steps: int,
                 stop: threading.Event | None = None) -> Iterator[ProjectEvent]:
    """Load an uploaded image safely (size caps; corrupt files raise DatasetError) and yield projector events."""
    if not 10 <= steps + wplus_steps <= MAX_INVERT_STEPS or steps < 1 or wplus_steps < 0:
        raise ValueError(f"steps must be >= 1, W+ steps >= 0, and their sum within [10, {MAX_INVERT_STEPS}]")
    if Path(path).suffix.lower() == ".zip":
        raise ValueError(f"{Path(path).name}: inversion takes one image file, not a zip")
    ds = load_images([path], size=model.resolution, name="upload")
    target = from_uint8(ds.images[:1])  # (1, 3, R, R)
    D = model.checkpoint.D
    if model.G.w_avg.is_cuda:
        G, D = model.G, copy.deepcopy(D).to(model.G.w_avg.device) if D is not None else None
    else:  # the CPU fp32 copy in contiguous format: gradients through the channels-last serving copy are slower
        G = model.checkpoint.G_ema
    with torch.enable_grad():
        yield from project(G, target.to(G.w_avg.device), steps=steps, wplus_steps=wplus_steps, D=D,
                           feature_weight=0.05, frame_every=10, stop=stop)
