"""Datasets: the Noto Color Emoji set, and any folder or zip of images, held in memory as uint8.

On disk a dataset is a folder with
    images.npy   (N, H, W, 3) uint8, RGB
    meta.json    {"name", "license", "resolution", "labels": {"group": [...], "subgroup": [...]}, "items": [...],
                  "sources": [...]}
`images.npy` is read with allow_pickle=False. Datasets at 64 px are small (3,655 emoji = 45 MB), so training
samples batches straight from memory.

Besides the Noto font, emoji artwork from two npm packages can be added (unpacked by the user beforehand; nothing
here downloads): Twemoji (`@twemoji/svg`, SVGs named by code point) and Microsoft Fluent Emoji (`fluentui-emoji`,
SVGs named by CLDR short name). Each SVG is matched to its emoji-test.txt entry, so every image carries the same
group/subgroup labels, plus a `style` label naming its artwork and a per-item source and licence.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
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
    return crop_to_ink(canvas, size)


def crop_to_ink(canvas: Image.Image, size: int) -> np.ndarray | None:
    """An RGBA drawing on a transparent canvas -> (size, size, 3) uint8 on white, the square around its ink centred
    (so every source fills the frame the same way, whatever margin its artwork has); None if nothing was drawn."""
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    s = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    sq = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    sq.paste(canvas.crop((cx - s // 2, cy - s // 2, cx - s // 2 + s, cy - s // 2 + s)), (0, 0))
    return square_rgb(sq, size)


def build_emoji_dataset(size: int = 64, limit: int | None = None, progress: bool = True,
                        emoji_test: str | Path | None = None) -> ImageDataset:
    """Render every fully-qualified emoji of Noto Color Emoji (3,655 with Debian's font and unicode-data)."""
    font_path = find_file(NOTO_FONT_PATHS, "Noto Color Emoji font", "fonts-noto-color-emoji")
    test_path = emoji_test or find_file(EMOJI_TEST_PATHS, "emoji-test.txt", "unicode-data")
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


# ----------------------------------------------------------------------------------------------------------------
# Twemoji and Fluent Emoji (SVG packages from npm, unpacked by the user), and the combined multi-style set

TWEMOJI_LICENSE = ("Twemoji graphics (c) Twitter, Inc and other contributors, CC-BY 4.0 "
                   "(https://creativecommons.org/licenses/by/4.0/; attribute when sharing images or models); "
                   "npm package @twemoji/svg MIT")
FLUENT_LICENSE = "Fluent Emoji (c) Microsoft Corporation, MIT; npm package fluentui-emoji MIT"
FLUENT_STYLES = ("flat", "modern", "high-contrast")
RASTER_OVERSAMPLE = 4  # SVGs are drawn at 4x the dataset size, cropped to their ink, then Lanczos-downsampled


def _package_root(path: str | Path, what: str) -> Path:
    """The unpacked npm package folder: `path` itself, or `path/package` as `tar xzf NAME.tgz` leaves it."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what} package folder not found: {path} (unpack the npm tarball first)")
    if not (path / "package.json").exists() and (path / "package" / "package.json").exists():
        path = path / "package"
    return path


def _package_version(root: Path) -> dict[str, str]:
    try:
        pj = json.loads((root / "package.json").read_text())
        return {"package": str(pj.get("name", "")), "version": str(pj.get("version", ""))}
    except (OSError, json.JSONDecodeError):
        return {"package": "", "version": ""}


def twemoji_file_names(codepoints: str) -> list[str]:
    """Candidate Twemoji file stems of an emoji-test.txt code point sequence ('1F34E', '2764 FE0F 200D 1F525').

    Twemoji's own rule: without a zero-width joiner (200D) every FE0F variation selector is dropped from the name
    ('2764 FE0F' -> '2764'); with one they are kept ('1f3cb-fe0f-200d-2640-fe0f'). A few files break that rule, so
    the sequence as written and the one without any FE0F are tried next. Leading zeros are dropped ('00A9' -> 'a9').
    """
    cps = [format(int(c, 16), "x") for c in codepoints.split()]
    exact = "-".join(cps)
    stripped = "-".join(c for c in cps if c != "fe0f")
    first = exact if "200d" in cps else stripped
    return list(dict.fromkeys([first, exact, stripped]))


# emoji-test.txt names that Fluent Emoji files under another name (older CLDR names, or person-first words).
FLUENT_ALIASES = {
    "smiling face with open hands": "hugging face", "face with crossed-out eyes": "knocked-out face",
    "enraged face": "pouting face", "black bird": "blackbird", "stuffed flatbread": "stuffedbread flat",
    "red triangle pointed up": "red triangle", "deaf person": "person deaf", "deaf man": "man deaf",
    "deaf woman": "woman deaf", "merperson": "person merpeople", "merman": "man merpeople",
    "mermaid": "woman merpeople", "people with bunny ears": "person with bunny ears",
    "men with bunny ears": "man with bunny ears", "women with bunny ears": "woman with bunny ears",
    "people wrestling": "person wrestling", "men wrestling": "man wrestling", "women wrestling": "woman wrestling",
    **{n: "person " + n for n in ("elf", "fairy", "genie", "mage", "superhero", "supervillain", "vampire", "zombie")},
}
SKIN_TONE = re.compile(r"^(light|medium-light|medium|medium-dark|dark) skin tone$")


def _slug(text: str) -> str:
    """'Woman’s Boot' -> 'womans-boot', 'piñata' -> 'pinata', 'A button (blood type)' -> 'a-button-blood-type'."""
    n = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    n = re.sub(r"['’.!“”]", "", n)  # apostrophes and dots vanish: woman’s -> womans, Mrs. -> mrs
    return re.sub(r"[^a-z0-9]+", "-", n).strip("-")


def fluent_file_name(name: str) -> str | None:
    """The Fluent Emoji file stem of an emoji-test.txt name (its CLDR short name), or None if Fluent has no such file.

    Qualifiers after ':' follow the base name and the skin tone goes last: 'cook: light skin tone' -> 'cook-light',
    'man: medium-dark skin tone, bald' -> 'man-bald-medium-dark', 'person: blond hair' -> 'person-blonde-hair',
    'keycap: #' -> 'keycap-hashtag'. Two tones (a handshake or couple of mixed tones) have no Fluent file: None.
    A person without a tone is '<stem>-default' in Fluent (see `fluent_candidates`).
    """
    base, _, quals = name.partition(": ")
    base = FLUENT_ALIASES.get(base.lower(), base)
    parts = [q for q in quals.split(", ") if q] if quals else []
    tones = [SKIN_TONE.match(q).group(1) for q in parts if SKIN_TONE.match(q)]
    words = [q for q in parts if not SKIN_TONE.match(q)]
    if len(tones) > 1:
        return None
    words = [{"#": "hashtag", "*": "asterisk", "blond hair": "blonde hair"}.get(w, w) for w in words]
    return _slug(" ".join([base] + words + tones))


def fluent_candidates(name: str) -> list[str]:
    """File stems to try for one emoji name: the plain stem, and '<stem>-default' (Fluent's untoned person)."""
    stem = fluent_file_name(name)
    return [] if stem is None else [stem, stem + "-default"]


def rsvg_convert() -> str:
    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise DatasetError("rsvg-convert (an SVG rasteriser) not found. Install it: sudo apt-get install librsvg2-bin")
    return exe


def rasterise_svg(path: str | Path, size: int, exe: str | None = None) -> np.ndarray | None:
    """One SVG -> (size, size, 3) uint8 on white, cropped to its ink like the Noto renders; None if it draws nothing.

    Drawn with rsvg-convert at RASTER_OVERSAMPLE x `size` on a transparent canvas, so the crop and the Lanczos
    downsampling see the same edges as the Noto glyphs do (which are drawn at 109 px).
    """
    big = size * RASTER_OVERSAMPLE
    try:
        out = subprocess.run([exe or rsvg_convert(), "-w", str(big), "-h", str(big), "-f", "png", str(path)],
                             capture_output=True, timeout=60, check=True).stdout
        im = Image.open(io.BytesIO(out))
        im.load()
    except subprocess.CalledProcessError as e:
        raise DatasetError(f"{Path(path).name}: rsvg-convert failed ({e.stderr.decode(errors='replace').strip()[:200]})") from None
    except subprocess.TimeoutExpired:
        raise DatasetError(f"{Path(path).name}: rsvg-convert took over 60 s") from None
    except Exception as e:  # PIL raises many types for a broken PNG
        raise DatasetError(f"{Path(path).name}: unreadable rsvg-convert output ({type(e).__name__}: {e})") from None
    return crop_to_ink(im.convert("RGBA"), size)


def match_twemoji(root: Path, entries: list[dict[str, str]]) -> tuple[list[tuple[dict[str, str], Path]], list[str]]:
    """Pair emoji-test entries with Twemoji SVGs by code point. Returns ([(entry, svg)], [unmatched file names])."""
    files = {f.stem.lower(): f for f in root.glob("*.svg")}
    return _pair(entries, files, lambda e: twemoji_file_names(e["codepoints"]))


def match_fluent(root: Path, entries: list[dict[str, str]], style: str = "flat"
                 ) -> tuple[list[tuple[dict[str, str], Path]], list[str]]:
    """Pair emoji-test entries with Fluent Emoji SVGs (icons/<style>/) by CLDR name. Same return as match_twemoji."""
    if style not in FLUENT_STYLES:
        raise DatasetError(f"Fluent Emoji style must be one of {FLUENT_STYLES}, got {style!r}")
    folder = root / "icons" / style
    if not folder.is_dir():
        raise DatasetError(f"{root}: no icons/{style}/ folder (is this the unpacked fluentui-emoji package?)")
    files = {f.stem: f for f in folder.glob("*.svg")}
    return _pair(entries, files, lambda e: fluent_candidates(e["name"]))


def _pair(entries: list[dict[str, str]], files: dict[str, Path], candidates
          ) -> tuple[list[tuple[dict[str, str], Path]], list[str]]:
    """Give each entry the first of its candidate file stems that exists and is not taken yet.
    Returns ([(entry, file)], [names of files no entry took])."""
    pairs, used = [], set()
    for e in entries:
        for stem in candidates(e):
            if stem in files and stem not in used:
                pairs.append((e, files[stem]))
                used.add(stem)
                break
    return pairs, sorted(files[s].name for s in set(files) - used)


def build_multistyle_dataset(
    size: int = 64,
    twemoji: str | Path | None = None,
    fluent: str | Path | None = None,
    fluent_styles: tuple[str, ...] = ("flat",),
    noto: bool = True,
    emoji_test: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> ImageDataset:
    """Noto renders plus Twemoji and/or Fluent Emoji SVGs, all labelled with the emoji-test.txt group and subgroup
    and a `style` ('noto', 'twemoji', 'fluent-flat', ...). `twemoji` / `fluent` are unpacked npm package folders.

    Label indices follow emoji-test.txt's order over all its fully-qualified emoji, so they are the same whatever
    sources are included. Each item records its source, file and licence; `.sources` has per-source provenance and
    match counts (`matched`, `files`, `unmatched` examples), and `.skipped` the files that could not be used.
    """
    entries = parse_emoji_test(emoji_test or find_file(EMOJI_TEST_PATHS, "emoji-test.txt", "unicode-data"))[:limit]
    if not entries:
        raise DatasetError("emoji-test.txt lists no fully-qualified emoji")
    groups = list(dict.fromkeys(e["group"] for e in entries))
    subgroups = list(dict.fromkeys(e["subgroup"] for e in entries))
    styles: list[str] = []
    arrays: list[np.ndarray] = []
    items: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    skipped: list[str] = []

    def label(e: dict[str, str], style: str) -> dict[str, Any]:
        return {"codepoints": e["codepoints"], "name": e["name"], "group": groups.index(e["group"]),
                "subgroup": subgroups.index(e["subgroup"]), "style": styles.index(style)}

    if noto:
        ds = build_emoji_dataset(size=size, limit=limit, progress=progress, emoji_test=emoji_test)
        styles.append("noto")
        for a, it in zip(ds.images, ds.items):
            arrays.append(a)
            e = {"codepoints": it["codepoints"], "name": it["name"], "group": ds.labels["group"][it["group"]],
                 "subgroup": ds.labels["subgroup"][it["subgroup"]]}
            items.append({**label(e, "noto"), "source": "noto", "license": "OFL-1.1 / Apache-2.0"})
        sources.append({"style": "noto", "source": "Noto Color Emoji font", "license": NOTO_LICENSE,
                        "matched": len(ds), "images": len(ds), "entries": len(entries)})

    # One entry per SVG style: (style, source, licence, short licence, [(entry, svg)], unmatched files, package version)
    svg_sets: list[tuple[str, str, str, str, list, list[str], dict[str, str]]] = []
    if twemoji is not None:
        root = _package_root(twemoji, "Twemoji")
        pairs, unmatched = match_twemoji(root, entries)
        svg_sets.append(("twemoji", "twemoji", TWEMOJI_LICENSE, "CC-BY-4.0 (Twemoji, Twitter)", pairs, unmatched,
                         _package_version(root)))
    if fluent is not None:
        root = _package_root(fluent, "Fluent Emoji")
        for st in fluent_styles:
            pairs, unmatched = match_fluent(root, entries, st)
            svg_sets.append((f"fluent-{st}", "fluent", FLUENT_LICENSE, "MIT (Fluent Emoji, Microsoft)", pairs, unmatched,
                             _package_version(root)))
    exe = rsvg_convert() if svg_sets else None
    for style, source, lic, short_lic, pairs, unmatched, version in svg_sets:
        styles.append(style)
        it = pairs
        if progress:
            from tqdm import tqdm

            it = tqdm(pairs, desc=f"rasterising {style}", unit="img")
        n = 0
        for e, svg in it:
            try:
                a = rasterise_svg(svg, size, exe)
            except DatasetError as err:
                skipped.append(f"{style}: {err}")
                continue
            if a is None:
                skipped.append(f"{style}: {svg.name}: draws nothing")
                continue
            arrays.append(a)
            items.append({**label(e, style), "source": source, "file": svg.name, "license": short_lic})
            n += 1
        sources.append({"style": style, "source": source, **version, "license": lic, "files": len(pairs) + len(unmatched),
                        "matched": len(pairs), "images": n, "unmatched": len(unmatched),
                        "unmatched_examples": unmatched[:20]})
    if not arrays:
        raise DatasetError("no emoji images: give the Noto font or at least one SVG package")
    license = "; ".join(s["license"] for s in sources)
    return ImageDataset(np.stack(arrays), name="emoji-" + "+".join(styles), license=license,
                        labels={"group": groups, "subgroup": subgroups, "style": styles}, items=items,
                        skipped=skipped, sources=sources)
