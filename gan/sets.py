"""Small bundled fine-tuning sets (assets/sets/<name>/*.png, 64 px), made from the emoji dataset by
`python tools/make_sets.py`. Shipped so the app's fine-tune tab works without the font or any upload."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from gan.dataset import ImageDataset, load_images
from gan.paths import SETS_DIR

FACE_SUBGROUPS = ("face-smiling", "face-affection", "face-tongue", "face-hand", "face-neutral-skeptical", "face-sleepy",
                  "face-unwell", "face-hat", "face-glasses", "face-concerned", "face-negative", "face-costume")

BUNDLED = {
    "animals": "Animal faces and mammals (66 emoji, subgroup animal-mammal)",
    "hearts": "Hearts (25 emoji, subgroup heart)",
    "faces": "Smiley faces (64 emoji from the face-* subgroups)",
    "sketch-faces": "Smiley faces as ink sketches (64): a style the base model never saw",
    "sketch-mix": "Ink sketches of 30 emoji of every kind (animals, food, objects, symbols...): a new style, varied content",
}
SKETCH_MIX_SIZE = 30
DEFAULT_SET = "sketch-faces"  # the app's fine-tune tab starts on a style the base model never saw: the change shows


def list_sets() -> dict[str, str]:
    """Bundled sets that are present on disk: name -> description."""
    return {k: v for k, v in BUNDLED.items() if (SETS_DIR / k).is_dir()}


def load_set(name: str, size: int = 64) -> ImageDataset:
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled set {name!r}; choose from {sorted(BUNDLED)}")
    folder = SETS_DIR / name
    if not folder.is_dir():
        raise ValueError(f"bundled set {name!r} is missing from {folder}")
    ds = load_images([folder], size=size, name=name)
    ds.license = "Noto Color Emoji (Google): images Apache-2.0"
    return ds


def sketch(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 emoji -> a dark-ink line drawing on white of the same size."""
    im = Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.LANCZOS).convert("L")
    edges = ImageOps.invert(im.filter(ImageFilter.FIND_EDGES))
    edges = ImageOps.autocontrast(edges, cutoff=2).point(lambda v: 255 if v > 200 else int(v * 0.6))
    ink = Image.merge("RGB", (edges, edges, edges.point(lambda v: min(255, v + 25))))  # a blue-black ink
    return np.asarray(ink.resize((img.shape[1], img.shape[0]), Image.LANCZOS), dtype=np.uint8)


def varied_picks(ds: ImageDataset, n: int) -> list[int]:
    """n dataset rows of as many kinds as possible: the first image of each subgroup, taken round-robin over the
    groups (one subgroup of every group, then the next of each...), so any prefix spans the groups."""
    by_group: dict[int, list[int]] = {}
    seen: set[int] = set()
    for j, it in enumerate(ds.items):
        if it["subgroup"] not in seen:
            seen.add(it["subgroup"])
            by_group.setdefault(it["group"], []).append(j)
    queues = [by_group[g] for g in sorted(by_group)]
    picks: list[int] = []
    for r in range(max(len(q) for q in queues)):
        picks += [q[r] for q in queues if r < len(q)]
    return picks[:n]


def build_sets(ds: ImageDataset, out: Path = SETS_DIR, names: tuple[str, ...] | None = None) -> dict[str, int]:
    """Write the bundled sets (all, or `names`) from the emoji dataset. Returns name -> image count.
    A multi-style dataset contributes its Noto images only, as the single-style one did."""
    if "style" in ds.labels:
        noto = [j for j, it in enumerate(ds.items) if ds.labels["style"][it["style"]] == "noto"]
        ds = ImageDataset(ds.images[noto], items=[ds.items[j] for j in noto], labels=ds.labels, name=ds.name)
    subgroups = ds.labels["subgroup"]
    sg = np.array([subgroups[it["subgroup"]] for it in ds.items])
    picks = {
        "animals": np.flatnonzero(sg == "animal-mammal"),
        "hearts": np.flatnonzero(sg == "heart"),
        "faces": np.flatnonzero(np.isin(sg, FACE_SUBGROUPS))[:64],
    }
    picks["sketch-faces"] = picks["faces"]
    picks["sketch-mix"] = np.array(varied_picks(ds, SKETCH_MIX_SIZE))
    counts = {}
    for name, idx in picks.items():
        if names is not None and name not in names:
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, j in enumerate(idx):
            im = ds.images[j] if not name.startswith("sketch-") else sketch(ds.images[j])
            Image.fromarray(im).save(folder / f"{i:03d}.png", optimize=True)
        counts[name] = len(idx)
    return counts
