import io
import zipfile

import numpy as np
import pytest
from PIL import Image

import gan.dataset as dataset
from gan.dataset import DatasetError, ImageDataset, build_emoji_dataset, load_dataset, load_images


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
    monkeypatch.setattr(dataset, "NOTO_FONT_PATHS", ("/nonexistent/NotoColorEmoji.ttf",))
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
    entries = dataset.parse_emoji_test(p)
    assert [e["name"] for e in entries] == ["grinning face", "chequered flag"]
    assert entries[1]["group"] == "Flags" and entries[0]["emoji"] == "\U0001F600"


@pytest.mark.skipif(not any(__import__("os").path.exists(p) for p in dataset.NOTO_FONT_PATHS), reason="font not installed")
def test_emoji_rendering_real_font():
    ds = build_emoji_dataset(size=32, limit=12, progress=False)
    assert len(ds) == 12 and ds.images.shape == (12, 32, 32, 3)
    assert ds.labels["group"][0] == "Smileys & Emotion" and "OFL" in ds.license
    # an emoji on white: corners white, centre coloured
    assert (ds.images[:, 0, 0] == 255).all() and (ds.images[:, 16, 16] != 255).any()
