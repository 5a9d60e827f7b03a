"""Datasets held in memory as uint8, and the safe reading of images, folders and zips (uploads among them).

On disk a dataset is a folder with
    images.npy   (N, H, W, 3) uint8, RGB
    meta.json    {"name", "license", "resolution", "labels": {"group": [...], "subgroup": [...]}, "items": [...],
                  "sources": [...]}
`images.npy` is read with allow_pickle=False. Datasets at 64 px are small (3,655 emoji = 45 MB), so training
samples batches straight from memory. Every decoded image passes size, aspect and decompression-bomb caps, and zips
are read member by member with caps on count, size and ratio, never extracted. The emoji dataset itself is built
by gan.emoji_build.
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from gan.images import from_uint8
from gan.io import atomic_write_bytes, atomic_write_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs (a 6000x6000 photo is fine)
MAX_FILE_BYTES = 50_000_000  # per image
MIN_IMAGE_SIDE = 16  # smaller images carry too little to train on or invert
MAX_ASPECT = 8  # width:height (either way); only the centre square is used
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_TOTAL_BYTES = 1_000_000_000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per member


class DatasetError(ValueError):
    """A dataset cannot be built or read; the message says why and what to do."""


@dataclass
class ImageDataset:
    images: np.ndarray  # (N, H, W, 3) uint8
    name: str = "images"
    license: str = "unknown"
    labels: dict[str, list[str]] = field(default_factory=dict)  # label name -> list of class names
    items: list[dict[str, Any]] = field(default_factory=list)  # one record per image
    skipped: list[str] = field(default_factory=list)  # files that could not be read, with the reason
    sources: list[dict[str, Any]] = field(default_factory=list)  # provenance of each artwork source (combined sets)

    def __post_init__(self) -> None:
        assert self.images.ndim == 4 and self.images.shape[3] == 3 and self.images.dtype == np.uint8, (
            f"images must be (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}"
        )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def label_array(self, label: str) -> np.ndarray:
        """(N,) int64 class indices of `label` (e.g. 'group')."""
        return np.array([it[label] for it in self.items], dtype=np.int64)

    def class_weights(self, label: str, power: float = 1.0) -> np.ndarray:
        """(N,) float64 sampling probabilities that draw each class of `label` equally often (power 1), or part of
        the way there from every image equally often (power 0): weight of an image = count(its class) ** -power."""
        if label not in self.labels or not self.items:
            raise ValueError(f"cannot balance the classes of {label!r}: this dataset's labels are {sorted(self.labels) or 'none'}")
        if not 0.0 <= power <= 1.0:
            raise ValueError(f"the balance power must be within [0, 1] (0: the data's mix, 1: equal classes), got {power:g}")
        rows = self.label_array(label)  # (N,)
        counts = np.bincount(rows, minlength=len(self.labels[label])).astype(np.float64)  # (classes,)
        w = counts[rows] ** -float(power)  # (N,); every row's class has count >= 1
        return w / w.sum()

    def subset(self, idx: np.ndarray | list[int], name: str | None = None) -> "ImageDataset":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageDataset(
            self.images[idx], name or self.name, self.license, self.labels, [self.items[i] for i in idx] if self.items else [],
            sources=self.sources,
        )

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, self.images, allow_pickle=False)
        atomic_write_bytes(out / "images.npy", buf.getvalue())
        meta = {
            "name": self.name, "license": self.license, "resolution": self.resolution, "count": len(self),
            "labels": self.labels, "items": self.items,
        }
        if self.sources:
            meta["sources"] = self.sources
        atomic_write_text(out / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
        return out

    def to_tensor(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 HWC rows -> img (B, 3, H, W) float in [-1, 1]."""
        return from_uint8(self.images[idx.cpu().numpy()]).to(device)  # (B, 3, H, W)


# ----------------------------------------------------------------------------------------------------------------
# Safe image decoding


def _decode_image(data: bytes, name: str, size: int) -> np.ndarray:
    """Bytes of one image -> (size, size, 3) uint8, centre-cropped, composited on white. Raises DatasetError."""
    if len(data) > MAX_FILE_BYTES:
        raise DatasetError(f"{name}: file too large ({len(data) / 1e6:.0f} MB > {MAX_FILE_BYTES / 1e6:.0f} MB)")
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DatasetError(f"{name}: image too large ({im.width}x{im.height})")
            if min(im.size) < MIN_IMAGE_SIDE:
                raise DatasetError(f"{name}: image too small ({im.width}x{im.height}; at least {MIN_IMAGE_SIDE} px a side)")
            if max(im.size) > MAX_ASPECT * min(im.size):
                raise DatasetError(f"{name}: aspect ratio too extreme ({im.width}x{im.height}; at most {MAX_ASPECT}:1, "
                                   "since the centre square is what is used)")
            im.load()
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"{name}: image too large ({e})") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise DatasetError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    return square_rgb(im, size)


def square_rgb(im: Image.Image, size: int, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Any PIL image -> (size, size, 3) uint8: alpha composited on `background`, centre crop, Lanczos resize."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, background + (255,))
        im = Image.alpha_composite(bg, im)
    im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def _iter_zip(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) of image members of a zip, with caps on count, size and ratio; never extracts."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{path.name}: not a readable zip file ({e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DatasetError(f"{path.name}: too many entries ({len(infos)} > {MAX_ZIP_MEMBERS})")
        total = 0
        for info in infos:
            name = info.filename
            if info.is_dir() or name.startswith("/") or ".." in Path(name).parts or name.startswith("__MACOSX"):
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # symlink
                continue
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if info.file_size > MAX_FILE_BYTES:
                raise DatasetError(f"{path.name}: member {name} too large ({info.file_size} bytes)")
            if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
                raise DatasetError(f"{path.name}: member {name} has a suspicious compression ratio (zip bomb?)")
            total += info.file_size
            if total > MAX_ZIP_TOTAL_BYTES:
                raise DatasetError(f"{path.name}: more than {MAX_ZIP_TOTAL_BYTES // 10**6} MB uncompressed")
            try:
                with zf.open(info) as f:
                    data = f.read(MAX_FILE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
                raise DatasetError(f"{path.name}: member {name} cannot be read ({e})") from None
            yield name, data


def load_images(paths: list[str | Path], size: int, name: str = "images", min_images: int = 1) -> ImageDataset:
    """Images from files, folders (recursive) and zips -> ImageDataset at `size` px.

    Unreadable images are skipped and listed in `.skipped`; if fewer than `min_images` remain, DatasetError.
    """
    if not 8 <= size <= 1024:
        raise DatasetError(f"size must be in [8, 1024], got {size}")
    arrays, items, skipped = [], [], []

    def add(label: str, data: bytes) -> None:
        try:
            arrays.append(_decode_image(data, label, size))
            items.append({"file": label})
        except DatasetError as e:
            skipped.append(str(e))

    for p in map(Path, paths):
        if not p.exists():
            raise DatasetError(f"no such file or folder: {p}")
        if p.is_dir():
            if (p / "images.npy").exists() and (p / "meta.json").exists():
                ds = load_dataset(p)
                if ds.resolution != size:
                    ds = ImageDataset(np.stack([square_rgb(Image.fromarray(a), size) for a in ds.images]), ds.name, ds.license, ds.labels, ds.items)
                arrays.extend(ds.images)
                items.extend(ds.items or [{}] * len(ds))
                continue
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.is_symlink() and f.suffix.lower() in IMAGE_SUFFIXES:
                    add(str(f.relative_to(p)), f.read_bytes()[: MAX_FILE_BYTES + 1])
        elif p.suffix.lower() == ".zip":
            for member, data in _iter_zip(p):
                add(f"{p.name}/{member}", data)
        else:
            add(p.name, p.read_bytes()[: MAX_FILE_BYTES + 1])
    if len(arrays) < min_images:
        why = ("; skipped: " + "; ".join(skipped[:5])) if skipped else ""
        raise DatasetError(f"found {len(arrays)} usable image(s), need at least {min_images}{why}")
    return ImageDataset(np.stack(arrays), name=name, items=items, skipped=skipped)


def load_dataset(path: str | Path) -> ImageDataset:
    """A dataset folder written by `ImageDataset.save` (or any folder/zip of images, resized to 64 px)."""
    path = Path(path)
    if path.is_dir() and (path / "images.npy").exists():
        try:
            images = np.load(path / "images.npy", allow_pickle=False)
            meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}
        except (ValueError, OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: corrupt dataset ({e})") from None
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{path}/images.npy must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        return ImageDataset(
            images, meta.get("name", path.name), meta.get("license", "unknown"), meta.get("labels", {}), meta.get("items", []),
            sources=meta.get("sources", []),
        )
    return load_images([path], size=64, name=path.stem)
