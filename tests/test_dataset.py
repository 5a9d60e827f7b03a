import io
import zipfile

import numpy as np
import pytest
from PIL import Image

import gan.dataset as dataset
import gan.emoji_build as emoji_build
from gan.dataset import DatasetError, ImageDataset, load_dataset, load_images
from gan.emoji_build import build_emoji_dataset


def png_bytes(size=(20, 30), color=(255, 0, 0), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_of_images_rgb_centre_crop(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes((20, 30), (255, 0, 0)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(png_bytes((40, 40), (0, 0, 255, 0), mode="RGBA"))  # transparent -> white
    (tmp_path / "gray.png").write_bytes(png_bytes((16, 16), 128, mode="L"))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_images([tmp_path], size=16)
    assert ds.images.shape == (3, 16, 16, 3) and ds.images.dtype == np.uint8
    by_file = {it["file"]: im for it, im in zip(ds.items, ds.images)}
    assert (by_file["a.png"] == [255, 0, 0]).all()
    assert (by_file["sub/b.png"] == 255).all()
    assert (by_file["gray.png"] == 128).all()


def test_corrupt_and_huge_images_are_skipped_with_reasons(tmp_path, monkeypatch):
    (tmp_path / "ok.png").write_bytes(png_bytes())
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "trunc.png").write_bytes(png_bytes((64, 64))[:60])
    monkeypatch.setattr(dataset, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "big.png").write_bytes(png_bytes((100, 100)))
    ds = load_images([tmp_path], size=8)
    assert len(ds) == 1
    assert len(ds.skipped) == 3
    text = " ".join(ds.skipped)
    assert "bad.png: not a readable image" in text and "big.png: image too large" in text


def test_no_usable_images_is_a_clear_error(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="found 0 usable image"):
        load_images([tmp_path], size=8)
    with pytest.raises(DatasetError, match="no such file"):
        load_images([tmp_path / "missing"], size=8)


def test_zip_reading_skips_traversal_and_refuses_bombs(tmp_path):
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("x/one.png", png_bytes())
        zf.writestr("../evil.png", png_bytes())
        zf.writestr("__MACOSX/._one.png", b"junk")
        zf.writestr("readme.md", "hi")
    ds = load_images([z], size=8)
    assert len(ds) == 1 and ds.items[0]["file"] == "imgs.zip/x/one.png"
    assert not (tmp_path.parent / "evil.png").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", b"\0" * 5_000_000)
    with pytest.raises(DatasetError, match="compression ratio"):
        load_images([bomb], size=8)

    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(DatasetError, match="not a readable zip"):
        load_images([tmp_path / "fake.zip"], size=8)


def test_save_and_load_round_trip(tmp_path):
    imgs = np.random.RandomState(0).randint(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    ds = ImageDataset(imgs, name="r", license="CC0", labels={"group": ["a", "b"]}, items=[{"group": i % 2} for i in range(5)])
    ds.save(tmp_path / "d")
    back = load_dataset(tmp_path / "d")
    assert np.array_equal(back.images, imgs) and back.license == "CC0"
    assert back.label_array("group").tolist() == [0, 1, 0, 1, 0]
    assert back.subset([1, 3]).images.shape == (2, 8, 8, 3)


def test_missing_font_names_the_apt_package(monkeypatch):
    monkeypatch.setattr(emoji_build, "NOTO_FONT_PATHS", ("/nonexistent/NotoColorEmoji.ttf",))
    with pytest.raises(DatasetError, match="apt-get install fonts-noto-color-emoji"):
        build_emoji_dataset(size=16, progress=False)


def test_parse_emoji_test(tmp_path):
    p = tmp_path / "emoji-test.txt"
    p.write_text(
        "# group: Smileys & Emotion\n# subgroup: face-smiling\n"
        "1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face\n"
        "263A                                                   ; unqualified         # ☺ E0.6 smiling face\n"
        "# group: Flags\n# subgroup: flag\n"
        "1F3C1                                                  ; fully-qualified     # 🏁 E0.6 chequered flag\n",
        encoding="utf-8",
    )
    entries = emoji_build.parse_emoji_test(p)
    assert [e["name"] for e in entries] == ["grinning face", "chequered flag"]
    assert entries[1]["group"] == "Flags" and entries[0]["emoji"] == "\U0001F600"


@pytest.mark.skipif(not any(__import__("os").path.exists(p) for p in emoji_build.NOTO_FONT_PATHS), reason="font not installed")
def test_emoji_rendering_real_font():
    ds = build_emoji_dataset(size=32, limit=12, progress=False)
    assert len(ds) == 12 and ds.images.shape == (12, 32, 32, 3)
    assert ds.labels["group"][0] == "Smileys & Emotion" and "OFL" in ds.license
    # an emoji on white: corners white, centre coloured
    assert (ds.images[:, 0, 0] == 255).all() and (ds.images[:, 16, 16] != 255).any()


# ----------------------------------------------------------------------------------------------------------------
# Twemoji / Fluent Emoji packages (fake, tiny package folders written here: no npm needed)

EMOJI_TEST_EXCERPT = (
    "# group: Food & Drink\n# subgroup: food-fruit\n"
    "1F34E                                                  ; fully-qualified     # 🍎 E0.6 red apple\n"
    "# group: People & Body\n# subgroup: person-role\n"
    "1F9D1 200D 1F373                                       ; fully-qualified     # 🧑‍🍳 E12.1 cook\n"
    "1F9D1 1F3FB 200D 1F373                                 ; fully-qualified     # 🧑🏻‍🍳 E12.1 cook: light skin tone\n"
    "# group: Symbols\n# subgroup: heart\n"
    "2764 FE0F                                              ; fully-qualified     # ❤️ E0.6 red heart\n"
    "2764                                                   ; unqualified         # ❤ E0.6 red heart\n"
)


def disc_svg(color: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36"><circle cx="18" cy="18" r="12" fill="{color}"/></svg>'


@pytest.fixture
def fake_packages(tmp_path):
    """An emoji-test.txt excerpt and unpacked-looking @twemoji/svg and fluentui-emoji package folders."""
    test = tmp_path / "emoji-test.txt"
    test.write_text(EMOJI_TEST_EXCERPT, encoding="utf-8")
    tw = tmp_path / "twemoji" / "package"  # as `tar xzf` leaves it
    tw.mkdir(parents=True)
    (tw / "package.json").write_text('{"name": "@twemoji/svg", "version": "15.0.0"}')
    (tw / "1f34e.svg").write_text(disc_svg("#ff0000"))
    (tw / "2764.svg").write_text(disc_svg("#0000ff"))  # FE0F dropped from the file name, as Twemoji does
    (tw / "1f1e6.svg").write_text(disc_svg("#00ff00"))  # a regional indicator: no emoji-test entry
    fl = tmp_path / "fluent" / "package"
    (fl / "icons" / "flat").mkdir(parents=True)
    (fl / "package.json").write_text('{"name": "fluentui-emoji", "version": "1.3.0"}')
    (fl / "icons" / "flat" / "red-apple.svg").write_text(disc_svg("#00ff00"))
    (fl / "icons" / "flat" / "cook-default.svg").write_text(disc_svg("#ffff00"))
    (fl / "icons" / "flat" / "cook-light.svg").write_text(disc_svg("#ff00ff"))
    (fl / "icons" / "flat" / "phoenix-bird.svg").write_text(disc_svg("#000000"))  # newer than the excerpt
    return test, tmp_path / "twemoji", fl


def test_svg_file_names_from_code_points_and_cldr_names():
    assert emoji_build.twemoji_file_names("1F34E") == ["1f34e"]
    assert emoji_build.twemoji_file_names("2764 FE0F")[0] == "2764"  # no ZWJ: FE0F is not in the name
    assert emoji_build.twemoji_file_names("00A9 FE0F")[0] == "a9"  # no leading zeros
    assert emoji_build.twemoji_file_names("1F3CB FE0F 200D 2640 FE0F")[0] == "1f3cb-fe0f-200d-2640-fe0f"  # ZWJ: kept
    assert "1f3cb-200d-2640" in emoji_build.twemoji_file_names("1F3CB FE0F 200D 2640 FE0F")  # fallback
    cases = {"red apple": "red-apple", "woman’s boot": "womans-boot", "A button (blood type)": "a-button-blood-type",
             "piñata": "pinata", "keycap: #": "keycap-hashtag", "cook: light skin tone": "cook-light",
             "man: medium-dark skin tone, bald": "man-bald-medium-dark", "person: blond hair": "person-blonde-hair",
             "Mrs. Claus": "mrs-claus", "merman": "man-merpeople"}
    assert {n: emoji_build.fluent_file_name(n) for n in cases} == cases
    assert emoji_build.fluent_file_name("handshake: light skin tone, dark skin tone") is None
    assert emoji_build.fluent_candidates("cook") == ["cook", "cook-default"]


def test_matching_counts_without_rasterising(fake_packages):
    test, tw, fl = fake_packages
    entries = emoji_build.parse_emoji_test(test)
    pairs, unmatched = emoji_build.match_twemoji(emoji_build._package_root(tw, "Twemoji"), entries)
    assert [(e["name"], f.name) for e, f in pairs] == [("red apple", "1f34e.svg"), ("red heart", "2764.svg")]
    assert unmatched == ["1f1e6.svg"]
    pairs, unmatched = emoji_build.match_fluent(fl, entries, "flat")
    assert [(e["name"], f.name) for e, f in pairs] == [
        ("red apple", "red-apple.svg"), ("cook", "cook-default.svg"), ("cook: light skin tone", "cook-light.svg")]
    assert unmatched == ["phoenix-bird.svg"]
    with pytest.raises(DatasetError, match="no icons/modern/ folder"):
        emoji_build.match_fluent(fl, entries, "modern")
    with pytest.raises(DatasetError, match="package folder not found"):
        emoji_build._package_root(fl / "missing", "Twemoji")


@pytest.mark.skipif(__import__("shutil").which("rsvg-convert") is None,
                    reason="rsvg-convert not installed (Debian package librsvg2-bin): SVGs cannot be rasterised")
def test_multistyle_dataset_from_fake_packages(fake_packages, tmp_path, capsys, monkeypatch):
    test, tw, fl = fake_packages
    ds = emoji_build.build_multistyle_dataset(size=16, twemoji=tw, fluent=fl, noto=False, emoji_test=test, progress=False)
    assert ds.images.shape == (5, 16, 16, 3)
    assert ds.labels["style"] == ["twemoji", "fluent-flat"]
    assert ds.labels["group"] == ["Food & Drink", "People & Body", "Symbols"]
    assert [it["style"] for it in ds.items] == [0, 0, 1, 1, 1]
    assert [ds.labels["subgroup"][it["subgroup"]] for it in ds.items] == ["food-fruit", "heart", "food-fruit",
                                                                          "person-role", "person-role"]
    assert ds.items[0]["source"] == "twemoji" and "CC-BY" in ds.items[0]["license"] and ds.items[0]["file"] == "1f34e.svg"
    assert ds.items[2]["source"] == "fluent" and "MIT" in ds.items[2]["license"]
    assert "CC-BY 4.0" in ds.license and "Microsoft" in ds.license
    by = {s["style"]: s for s in ds.sources}
    assert (by["twemoji"]["matched"], by["twemoji"]["unmatched"], by["twemoji"]["version"]) == (2, 1, "15.0.0")
    assert (by["fluent-flat"]["matched"], by["fluent-flat"]["unmatched"]) == (3, 1)
    # rasterised on white, cropped to the ink: corners white, centre the SVG's colour
    assert (ds.images[:, 0, 0] == 255).all()
    assert ds.images[0, 8, 8].tolist() == [255, 0, 0] and ds.images[1, 8, 8].tolist() == [0, 0, 255]
    ds.save(tmp_path / "d")
    back = load_dataset(tmp_path / "d")
    assert back.sources == ds.sources and back.label_array("style").tolist() == [0, 0, 1, 1, 1]

    # the CLI: the dataset command with the unpacked package folders
    from gan.cli import main

    monkeypatch.setattr(emoji_build, "EMOJI_TEST_PATHS", (str(test),))
    main(["dataset", "emoji", "--twemoji", str(tw), "--fluent", str(fl), "--no-noto", "--size", "16",
          "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert "twemoji: 2 matched" in out and "fluent-flat: 3 matched" in out
    assert load_dataset(tmp_path / "cli").labels["style"] == ["twemoji", "fluent-flat"]


def test_broken_svg_is_skipped_with_its_reason(fake_packages):
    if __import__("shutil").which("rsvg-convert") is None:
        pytest.skip("rsvg-convert not installed (Debian package librsvg2-bin): SVGs cannot be rasterised")
    test, tw, _ = fake_packages
    (tw / "package" / "2764.svg").write_text("<svg not really")
    ds = emoji_build.build_multistyle_dataset(size=16, twemoji=tw, noto=False, emoji_test=test, progress=False)
    assert len(ds) == 1 and "2764.svg: rsvg-convert failed" in ds.skipped[0]


def test_missing_rasteriser_names_the_apt_package(fake_packages, monkeypatch):
    test, tw, _ = fake_packages
    monkeypatch.setattr(emoji_build.shutil, "which", lambda name: None)
    with pytest.raises(DatasetError, match="apt-get install librsvg2-bin"):
        emoji_build.build_multistyle_dataset(size=16, twemoji=tw, noto=False, emoji_test=test, progress=False)
