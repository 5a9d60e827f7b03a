"""The bundled fine-tuning sets: they ship, load at the model's size, and rebuild from a labelled dataset."""
import numpy as np
import pytest

from gan.dataset import ImageDataset, load_images
from gan.sets import BUNDLED, build_sets, list_sets, load_set, varied_picks


def test_every_bundled_set_ships_and_loads():
    assert set(list_sets()) == set(BUNDLED)
    for name in BUNDLED:
        ds = load_set(name)
        assert ds.images.shape[1:] == (64, 64, 3) and len(ds) >= 10
    with pytest.raises(ValueError, match="unknown bundled set"):
        load_set("no-such-set")


def labelled(styles: tuple[str, ...] = ("noto",)) -> ImageDataset:
    """3 groups with 2 subgroups each and 3 images per subgroup (and style), random pixels."""
    groups = ["Smileys & Emotion", "Food & Drink", "Symbols"]
    subgroups = ["face-smiling", "face-hat", "food-fruit", "drink", "heart", "arrow"]
    items = [{"group": s // 2, "subgroup": s, "style": k} for k in range(len(styles)) for s in range(6) for _ in range(3)]
    images = np.random.default_rng(0).integers(0, 256, (len(items), 16, 16, 3), dtype=np.uint8)
    return ImageDataset(images, items=items, labels={"group": groups, "subgroup": subgroups, "style": list(styles)})


def test_varied_picks_span_the_groups_first():
    ds = labelled()
    picks = varied_picks(ds, 4)
    assert [ds.items[j]["group"] for j in picks] == [0, 1, 2, 0]  # one of every group before a second of any
    assert len({ds.items[j]["subgroup"] for j in varied_picks(ds, 6)}) == 6  # and never a subgroup twice


def test_build_sets_takes_noto_only_and_the_named_sets(tmp_path):
    ds = labelled(styles=("noto", "twemoji"))
    counts = build_sets(ds, tmp_path, names=("sketch-mix", "hearts"))
    assert set(counts) == {"sketch-mix", "hearts"} and {p.name for p in tmp_path.iterdir()} == set(counts)
    assert counts["sketch-mix"] == 6 and counts["hearts"] == 3  # 6 subgroups; the 3 Noto hearts, not the Twemoji ones
    assert len(load_images([tmp_path / "sketch-mix"], size=16)) == 6
