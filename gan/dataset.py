"""Datasets: the Noto Color Emoji set, and any folder or zip of images, held in memory as uint8.

On disk a dataset is a folder with
    images.npy   (N, H, W, 3) uint8, RGB
    meta.json    {"name", "license", "resolution", "labels": {"group": [...], "subgroup": [...]}, "items": [...]}
`images.npy` is read with allow_pickle=False. Datasets at 64 px are small (3,655 emoji = 45 MB), so training
samples batches straight from memory.
"""
from __future__ import annotations

import io
import json
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gan.images import from_uint8
from gan.io import atomic_write_bytes, atomic_write_text

NOTO_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
)
EMOJI_TEST_PATHS = ("/usr/share/unicode/emoji/emoji-test.txt", "/usr/share/unicode-data/emoji/emoji-test.txt")
NOTO_LICENSE = "Noto Color Emoji (Google): font SIL OFL 1.1, emoji images Apache-2.0"

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

    def subset(self, idx: np.ndarray | list[int], name: str | None = None) -> "ImageDataset":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageDataset(
            self.images[idx], name or self.name, self.license, self.labels, [self.items[i] for i in idx] if self.items else []
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
            images, meta.get("name", path.name), meta.get("license", "unknown"), meta.get("labels", {}), meta.get("items", [])
        )
    return load_images([path], size=64, name=path.stem)


# ----------------------------------------------------------------------------------------------------------------
# Noto Color Emoji


def find_file(candidates: tuple[str, ...], what: str, package: str) -> Path:
    for c in candidates:
        if Path(c).exists():
            return Path(c)
    raise DatasetError(f"{what} not found (looked in {', '.join(candidates)}). Install it: sudo apt-get install {package}")


def parse_emoji_test(path: str | Path) -> list[dict[str, str]]:
    """Fully-qualified emoji of emoji-test.txt: [{'emoji', 'codepoints', 'name', 'group', 'subgroup'}]."""
    out, group, subgroup = [], "", ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            cps, rest = line.split(";", 1)
            name = rest.split("#", 1)[1].strip().split(" ", 2)[-1] if "#" in rest else ""
            chars = "".join(chr(int(c, 16)) for c in cps.split())
            out.append({"emoji": chars, "codepoints": cps.strip(), "name": name, "group": group, "subgroup": subgroup})
    return out


def render_emoji(font: ImageFont.FreeTypeFont, text: str, size: int) -> np.ndarray | None:
    """One emoji -> (size, size, 3) uint8 on white, tight-cropped to its ink and centred; None if it has no glyph."""
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((80, 80), text, font=font, embedded_color=True, anchor="mm")
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    s = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    sq = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    sq.paste(canvas.crop((cx - s // 2, cy - s // 2, cx - s // 2 + s, cy - s // 2 + s)), (0, 0))
    return square_rgb(sq, size)


def build_emoji_dataset(size: int = 64, limit: int | None = None, progress: bool = True) -> ImageDataset:
    """Render every fully-qualified emoji of Noto Color Emoji (3,655 with Debian's font and unicode-data)."""
    font_path = find_file(NOTO_FONT_PATHS, "Noto Color Emoji font", "fonts-noto-color-emoji")
    test_path = find_file(EMOJI_TEST_PATHS, "emoji-test.txt", "unicode-data")
    font = ImageFont.truetype(str(font_path), 109)  # CBDT bitmap font: 109 px is its only strike
    entries = parse_emoji_test(test_path)[:limit]
    groups = sorted({e["group"] for e in entries}, key=[e["group"] for e in entries].index)
    subgroups = sorted({e["subgroup"] for e in entries}, key=[e["subgroup"] for e in entries].index)
    arrays, items = [], []
    it = entries
    if progress:
        from tqdm import tqdm

        it = tqdm(entries, desc="rendering emoji", unit="img")
    for e in it:
        a = render_emoji(font, e["emoji"], size)
        if a is None:
            continue
        arrays.append(a)
        items.append({
            "codepoints": e["codepoints"], "name": e["name"] or unicodedata.name(e["emoji"][0], ""),
            "group": groups.index(e["group"]), "subgroup": subgroups.index(e["subgroup"]),
        })
    return ImageDataset(
        np.stack(arrays), name="noto-emoji", license=NOTO_LICENSE, labels={"group": groups, "subgroup": subgroups}, items=items
    )
