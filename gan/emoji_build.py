"""The emoji dataset's build pipeline: Noto Color Emoji rendered from the font, and artwork from two npm packages
(unpacked by the user beforehand; nothing here downloads): Twemoji (`@twemoji/svg`, SVGs named by code point) and
Microsoft Fluent Emoji (`fluentui-emoji`, SVGs named by CLDR short name), rasterised with `rsvg-convert`. Each SVG is
matched to its emoji-test.txt entry, so every image carries the same group/subgroup labels, plus a `style` label
naming its artwork and a per-item source and licence. The result is a gan.dataset.ImageDataset.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gan.dataset import DatasetError, ImageDataset, square_rgb

NOTO_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
)
EMOJI_TEST_PATHS = ("/usr/share/unicode/emoji/emoji-test.txt", "/usr/share/unicode-data/emoji/emoji-test.txt")
NOTO_LICENSE = "Noto Color Emoji (Google): font SIL OFL 1.1, emoji images Apache-2.0"

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


@dataclass
class SvgSource:
    """One SVG artwork style to rasterise: the emoji-test entries paired with its files, and its provenance."""

    style: str  # the `style` label of its images ('twemoji', 'fluent-flat', ...)
    source: str  # the package it came from ('twemoji', 'fluent')
    license: str  # the full licence text, for the dataset's sources
    short_license: str  # the licence recorded on each item
    pairs: list[tuple[dict[str, str], Path]]  # (emoji-test entry, SVG file)
    unmatched: list[str]  # files no entry took
    version: dict[str, str]  # {'package', 'version'} from its package.json


def svg_sources(entries: list[dict[str, str]], twemoji: str | Path | None, fluent: str | Path | None,
                fluent_styles: tuple[str, ...]) -> list[SvgSource]:
    """The SVG styles asked for (`twemoji` / `fluent`: unpacked npm package folders, or None), matched to `entries`."""
    out = []
    if twemoji is not None:
        root = _package_root(twemoji, "Twemoji")
        pairs, unmatched = match_twemoji(root, entries)
        out.append(SvgSource("twemoji", "twemoji", TWEMOJI_LICENSE, "CC-BY-4.0 (Twemoji, Twitter)", pairs, unmatched,
                             _package_version(root)))
    if fluent is not None:
        root = _package_root(fluent, "Fluent Emoji")
        for st in fluent_styles:
            pairs, unmatched = match_fluent(root, entries, st)
            out.append(SvgSource(f"fluent-{st}", "fluent", FLUENT_LICENSE, "MIT (Fluent Emoji, Microsoft)", pairs,
                                 unmatched, _package_version(root)))
    return out


@dataclass
class _MultistyleBuild:
    """The images, items and provenance of a multi-style set as each source adds its part. Label indices follow
    emoji-test.txt's order over `entries`, whatever sources are included."""

    entries: list[dict[str, str]]
    size: int
    progress: bool
    styles: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.groups = list(dict.fromkeys(e["group"] for e in self.entries))
        self.subgroups = list(dict.fromkeys(e["subgroup"] for e in self.entries))

    def label(self, e: dict[str, str], style: str) -> dict[str, Any]:
        return {"codepoints": e["codepoints"], "name": e["name"], "group": self.groups.index(e["group"]),
                "subgroup": self.subgroups.index(e["subgroup"]), "style": self.styles.index(style)}

    def add_noto(self, limit: int | None, emoji_test: str | Path | None) -> None:
        ds = build_emoji_dataset(size=self.size, limit=limit, progress=self.progress, emoji_test=emoji_test)
        self.styles.append("noto")
        for a, it in zip(ds.images, ds.items):
            self.arrays.append(a)
            e = {"codepoints": it["codepoints"], "name": it["name"], "group": ds.labels["group"][it["group"]],
                 "subgroup": ds.labels["subgroup"][it["subgroup"]]}
            self.items.append({**self.label(e, "noto"), "source": "noto", "license": "OFL-1.1 / Apache-2.0"})
        self.sources.append({"style": "noto", "source": "Noto Color Emoji font", "license": NOTO_LICENSE,
                             "matched": len(ds), "images": len(ds), "entries": len(self.entries)})

    def add_svgs(self, src: SvgSource, exe: str) -> None:
        self.styles.append(src.style)
        pairs = src.pairs
        if self.progress:
            from tqdm import tqdm

            pairs = tqdm(src.pairs, desc=f"rasterising {src.style}", unit="img")
        n = 0
        for e, svg in pairs:
            try:
                a = rasterise_svg(svg, self.size, exe)
            except DatasetError as err:
                self.skipped.append(f"{src.style}: {err}")
                continue
            if a is None:
                self.skipped.append(f"{src.style}: {svg.name}: draws nothing")
                continue
            self.arrays.append(a)
            self.items.append({**self.label(e, src.style), "source": src.source, "file": svg.name,
                               "license": src.short_license})
            n += 1
        self.sources.append({"style": src.style, "source": src.source, **src.version, "license": src.license,
                             "files": len(src.pairs) + len(src.unmatched), "matched": len(src.pairs), "images": n,
                             "unmatched": len(src.unmatched), "unmatched_examples": src.unmatched[:20]})

    def dataset(self) -> ImageDataset:
        if not self.arrays:
            raise DatasetError("no emoji images: give the Noto font or at least one SVG package")
        license = "; ".join(s["license"] for s in self.sources)
        return ImageDataset(np.stack(self.arrays), name="emoji-" + "+".join(self.styles), license=license,
                            labels={"group": self.groups, "subgroup": self.subgroups, "style": self.styles},
                            items=self.items, skipped=self.skipped, sources=self.sources)


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
    build = _MultistyleBuild(entries, size, progress)
    if noto:
        build.add_noto(limit, emoji_test)
    svgs = svg_sources(entries, twemoji, fluent, fluent_styles)
    exe = rsvg_convert() if svgs else None
    for src in svgs:
        build.add_svgs(src, exe)
    return build.dataset()
