"""Scrub strips: every value one Explore slider can take, rendered for the rest of the current state in one batched
call and sent as one lossless PNG sprite, so the page swaps frames locally while the slider is dragged (no request
per move) and renders the exact frame on release.

A strip goes through the same RenderQueue as the exact frame (studio.render_queue: a batch-invariant synthesis, whose
pixels do not depend on the batch), from the same ws (studio.explore.base_ws / edit_ws), so frame i of a strip is
the release render of value i pixel for pixel. Its key is the full state without the slider's own value, plus the
model's hash and the inverted image's id: the page shows a strip only after the server answered for the current
state (see app.py STRIP_JS).
"""
from __future__ import annotations

import base64
import copy
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from studio.explore import (
    DIRECTION_FIELDS,
    SLIDER_RANGE,
    SLIDER_STEP,
    ExploreState,
    Projection,
    base_ws,
    check_source,
    edit_ws,
)
from studio.models import LoadedModel
from studio.render_queue import STRIP, RenderQueue

MAX_STRIP_RESOLUTION = 128  # above this a strip of 61 frames costs seconds on a CPU and megabytes: no strips
LAYER_FIELDS: tuple[str, ...] = ("layer_start", "layer_end", "mix_start", "mix_end")  # integer sliders up to num_ws
STRIP_FIELDS: tuple[str, ...] = (*DIRECTION_FIELDS, "psi", *LAYER_FIELDS)  # the sliders that scrub
PSI_GRID = (0.0, 1.5, 0.05)  # the psi slider's (minimum, maximum, step) in the page
# Fields that do not change base_ws (only the edit on top): their frames share one mapping call.
_EDIT_ONLY = (*DIRECTION_FIELDS, "layer_start", "layer_end")


class StripOff(ValueError):
    """No strip for this state (a large model, random noise, no inverted image): the page renders on release."""


def slider_grid(field: str, model: LoadedModel) -> tuple[float, float, int]:
    """(minimum, step, number of values) of a strip slider, as the page's slider has them."""
    if field in DIRECTION_FIELDS:
        lo, hi, step = -SLIDER_RANGE, SLIDER_RANGE, SLIDER_STEP
    elif field == "psi":
        lo, hi, step = PSI_GRID
    elif field in LAYER_FIELDS:
        lo, hi, step = 0, model.num_ws, 1
    else:
        raise ValueError(f"no strip for {field!r}; strips exist for {', '.join(STRIP_FIELDS)}")
    return float(lo), float(step), round((hi - lo) / step) + 1


def grid_values(field: str, model: LoadedModel) -> list[float]:
    """Every value of the slider, rounded as the page's range input reports them (0.1 * 3 -> 0.3)."""
    lo, step, n = slider_grid(field, model)
    return [round(lo + i * step, 6) for i in range(n)]


def with_value(st: ExploreState, field: str, value: float | None) -> ExploreState:
    """A copy of `st` with one slider set (None: the slider left out, for keys)."""
    out = copy.deepcopy(st)
    if field in DIRECTION_FIELDS:
        out.coeffs[int(field[1:])] = value
    else:
        setattr(out, field, value)
    return out


def strip_key(model: LoadedModel, st: ExploreState, projection: Projection | None, field: str) -> str:
    """What a strip depends on: the model, the inverted image (if the state starts from it) and every state field
    except the slider's own value (of the validated state: 0 and 0.0 are one value)."""
    rest = with_value(copy.deepcopy(st).validate(model.num_ws, model.labels), field, None).__dict__
    return json.dumps([model.sha256, projection.id if st.source == "image" and projection else 0, field, rest],
                      sort_keys=True)


@dataclass(frozen=True)
class Strip:
    field: str
    key: str  # strip_key of the state it was rendered for
    lo: float  # the slider's minimum, step and number of values: frame i shows lo + i * step
    step: float
    count: int
    resolution: int  # frame size in px; the sprite is (resolution, count * resolution)
    png: bytes  # the sprite, frames left to right

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def frames(self) -> np.ndarray:
        """The sprite cut back into frames: (count, R, R, 3) uint8."""
        sprite = np.asarray(Image.open(io.BytesIO(self.png)).convert("RGB"))  # (R, count * R, 3)
        R = self.resolution
        return sprite.reshape(R, self.count, R, 3).transpose(1, 0, 2, 3)  # (count, R, R, 3)


def render_strip(model: LoadedModel, st: ExploreState, projection: Projection | None, field: str,
                 queue: RenderQueue) -> Strip:
    """Every value of `field` for the rest of `st`, as one batched render. Raises StripOff when there is none."""
    if model.resolution > MAX_STRIP_RESOLUTION:
        raise StripOff(f"this model is {model.resolution} px: scrub previews are off above "
                       f"{MAX_STRIP_RESOLUTION} px (the image updates when you let go of a slider)")
    if st.noise_mode == "random":
        raise StripOff("noise mode 'random' draws new noise for every render: no scrub preview")
    try:
        check_source(model, st, projection)
    except ValueError as e:
        raise StripOff(str(e)) from None
    states = [with_value(st, field, v).validate(model.num_ws, model.labels) for v in grid_values(field, model)]
    if field in _EDIT_ONLY:
        base = base_ws(model, st, projection)  # (1, num_ws, w_dim), shared: the frames differ only in the edit
        ws = torch.cat([edit_ws(model, s, base) for s in states])  # (N, num_ws, w_dim)
    else:
        ws = torch.cat([edit_ws(model, s, base_ws(model, s, projection)) for s in states])  # (N, num_ws, w_dim)
    images = queue.render(model, ws, st.noise_mode, priority=STRIP)  # (N, R, R, 3) uint8
    N, R = images.shape[:2]
    sprite = images.transpose(1, 0, 2, 3).reshape(R, N * R, 3)  # (R, N * R, 3): frames left to right
    buf = io.BytesIO()
    Image.fromarray(sprite).save(buf, format="PNG", compress_level=3)  # lossless; level 3: fast, ~10% bigger than 9
    lo, step, count = slider_grid(field, model)
    return Strip(field, strip_key(model, st, projection, field), lo, step, count, R, buf.getvalue())


class StripCache:
    """Recent strips, all sessions (keys hold the model's hash): a user who comes back to a slider, or a second
    user on the same state, gets the strip without rendering it again."""

    def __init__(self, queue: RenderQueue, size: int = 64):
        self.queue = queue
        self.size = size  # strips kept (64 px, 61 frames: ~0.2 MB each)
        self._strips: "OrderedDict[str, Strip]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: LoadedModel, st: ExploreState, projection: Projection | None, field: str) -> Strip:
        """The strip of `field` for `st` (validated here), cached or rendered now. Raises StripOff."""
        try:
            st.validate(model.num_ws, model.labels)
        except ValueError as e:
            raise StripOff(str(e)) from None
        key = strip_key(model, st, projection, field)
        with self._lock:
            if key in self._strips:
                self._strips.move_to_end(key)
                return self._strips[key]
        strip = render_strip(model, st, projection, field, self.queue)
        with self._lock:
            self._strips[key] = strip
            while len(self._strips) > self.size:
                self._strips.popitem(last=False)
        return strip
